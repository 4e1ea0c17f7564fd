"""Parser-only stand-in for ``$module``, written by perfsanity.engines.tooling into engine-parser venvs.

$why This stub makes every ``$module`` / ``$module.*``
import succeed: attributes are inert placeholders, decorators return the function unchanged.
It must never be on the path of a process that serves.
"""

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "$version"
PERFSANITY_PARSER_STUB = True


_CLASSES = {}


class _Meta(type):
    """Class attributes are stubs too (``InterpolationMode.NEAREST_EXACT``)."""

    def __getattr__(cls, item):
        return _attr(cls.__dict__.get("_stub_name", cls.__name__), item)


def _stub_class(name):
    """A real class for CapWords names (``isinstance(x, triton.runtime.jit.JITFunction)`` must work)."""
    if name not in _CLASSES:
        _CLASSES[name] = _Meta(name.rsplit(".", 1)[-1], (), {"__init__": lambda self, *a, **k: None,
                                                             "_stub_name": name})
    return _CLASSES[name]


def _attr(owner, item):
    if item.startswith("__") and item.endswith("__"):
        raise AttributeError(item)
    name = f"{owner}.{item}"
    return _stub_class(name) if item[:1].isupper() else _Any(name)


class _Any:
    """Any attribute, call, subscript or base class; a decorator that returns its function."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, item):
        return _attr(self._name, item)

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return _Any(f"{self._name}()")

    def __getitem__(self, item):
        return _Any(f"{self._name}[]")

    def __mro_entries__(self, bases):
        return (object,)

    def __bool__(self):
        return False

    def __repr__(self):
        return f"<parser stub {self._name}>"


class _StubModule(types.ModuleType):
    def __getattr__(self, item):
        return _attr(self.__name__, item)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder(__name__))


def __getattr__(item):
    return _attr(__name__, item)
