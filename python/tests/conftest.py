"""Two tiers: the pure tests (codec, quantisation, reference, the client against a test-double
server) always run; the tests marked `guest` need a guest serving the RTL and run only with
--guest (make test-ml), which boots one guest for the whole session with `cosim-launch --serve`
(or uses the server at $COSIM_SERVE). Without --guest they are deselected, and the summary says so;
with --guest a missing launcher or artefact fails them (never a skip)."""

import os
import shlex
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import cosim  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--guest",
        action="store_true",
        help="also run the tests that need a guest serving the RTL (boots one with cosim-launch --serve, "
        "or connects to $COSIM_SERVE); extra launcher options from $COSIM_ML_LAUNCH_ARGS",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--guest"):
        return
    deselected = [i for i in items if "guest" in i.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if "guest" not in i.keywords]
        config._cosim_deselected = len(deselected)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = getattr(config, "_cosim_deselected", 0)
    if n:
        terminalreporter.write_line(f"cosim: {n} tests that need a guest were NOT run (deselected): run them with --guest (make test-ml)")


@pytest.fixture(scope="session")
def guest(request):
    """One guest for the session: cosim-launch --serve (bounded boot), stopped at the end."""
    if not request.config.getoption("--guest"):
        pytest.fail("the guest fixture needs --guest")
    args = shlex.split(os.environ.get("COSIM_ML_LAUNCH_ARGS", ""))
    with cosim.Guest(launcher_args=args, boot_timeout=float(os.environ.get("COSIM_ML_BOOT_TIMEOUT", "300"))) as g:
        yield g
        assert g.client is not None
