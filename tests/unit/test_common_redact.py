"""perfsanity.common.redact.mask_url: the one URL masker (DB URLs, build URLs, upload target, free text)."""

from __future__ import annotations

import pytest

from perfsanity.common.redact import mask_url, redact


@pytest.mark.parametrize(("url", "kept", "dropped"), [
    ("postgresql+psycopg://u:pw@h:5432/db?connect_timeout=2", "postgresql+psycopg://u:***@h:5432/db?connect_timeout=2",
     "postgresql+psycopg://h:5432/db?connect_timeout=2"),
    ("https://bot:s3cret@ci.example/job/7/", "https://bot:***@ci.example/job/7/", "https://ci.example/job/7/"),
    ("https://ghp_token@github.com/x", "https://ghp_token@github.com/x", "https://github.com/x"),
    ("https://u:p@ss@h/x", "https://u:***@h/x", "https://h/x"),  # an unescaped @ in the password
    ("https://h/x?token=abc&page=2#top", "https://h/x?token=***&page=2#top", "https://h/x?token=***&page=2#top"),
    ("https://ci/x", "https://ci/x", "https://ci/x"),
    ("http://h/a@b", "http://h/a@b", "http://h/a@b"),  # an @ in the path is not a user
    ("sqlite:////tmp/h.sqlite", "sqlite:////tmp/h.sqlite", "sqlite:////tmp/h.sqlite"),
    ("", "", ""),
    ("not a url", "not a url", "not a url"),
])
def test_mask_url(url: str, kept: str, dropped: str) -> None:
    assert mask_url(url) == kept
    assert mask_url(url, keep_user=False) == dropped


def test_urls_in_free_text_use_the_same_masker() -> None:
    text = "cloning https://x:tok@git.example/r.git, then GET http://h:8000/v1?api_key=k1 ok"
    assert redact(text) == "cloning https://x:***@git.example/r.git, then GET http://h:8000/v1?api_key=*** ok"
