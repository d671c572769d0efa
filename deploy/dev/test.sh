#!/usr/bin/env bash
# Set up (see setup.sh), lint (ruff check and ruff format --check, configured in pyproject.toml),
# then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/dev/setup.sh
bash deploy/dev/setup-test-envs.sh
echo "lint: ruff check, ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
# Two workers, each running whole test files (--dist loadfile: a file's module fixtures stay in one
# process): the federation tests mostly wait on brokers, rounds and subprocesses, so on 2 cores this
# took the suite from 611 s to 390 s (docs/testing.md).
.venv/bin/python -m pytest -n 2 --dist loadfile "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
# A short mutation run on the trust-critical functions the last commit changed (docs/testing.md);
# it reports kill rates and survivors and does not decide the run's status.
if [ "$status" -eq 0 ] && [ "$#" -eq 0 ]; then
    timeout 900 .venv/bin/python deploy/dev/mutation.py --changed || echo "test.sh: the mutation run did not finish" >&2
fi
exit "$status"
