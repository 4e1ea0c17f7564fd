#!/bin/bash
# Parse-check the Jenkinsfile without a Jenkins server (npm-groovy-lint 15: CodeNarc on Java 17;
# version 18 needs Node 22). Fails on errors; style findings are informational.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec timeout 600 npx --yes npm-groovy-lint@15 --noserver --failon error Jenkinsfile
