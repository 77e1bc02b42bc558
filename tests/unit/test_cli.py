"""The front door: every command has one handler, and parsing imports no job (`tunesmith --help` stays instant)."""

import subprocess
import sys

from tunesmith.cli import HANDLERS, build_parser


def test_every_command_has_one_handler():
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "job").choices
    assert set(commands) == set(HANDLERS)


def test_help_imports_no_job_and_no_heavy_library():
    code = (
        "import sys\nfrom tunesmith.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'transformers', 'pydantic', 'tunesmith.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['tunesmith.cli', 'tunesmith.errors']"
