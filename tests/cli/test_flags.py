"""The flag table (embtune.cli.flags): it builds every option of train / from-corpus / pairs, its defaults
come from the settings classes, and the README table is its output."""
from __future__ import annotations

import re
from pathlib import Path

from cli_helpers import ok, saved

from embtune.cli import main
from embtune.cli.flags import COMMANDS, FLAGS, LORA_COMPUTE, flags_of, markdown_table
from embtune.pipeline.run_config import RUN_CONFIG, dump_run_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_table_builds_every_option(tmp_path):
    from embtune.models.fast_lora import COMPUTE_MODES

    assert sorted(LORA_COMPUTE) == sorted(COMPUTE_MODES)
    for command in COMMANDS:
        params = {p.name for p in main.commands[command].params} - {"help"}
        assert params == {f.param for f in flags_of(command)}, command
        for flag in flags_of(command):
            flag.default_for(command)  # every default comes from the settings class or the row
    table = markdown_table()
    assert len(table.strip().splitlines()) == len(FLAGS) + 2
    (tmp_path / RUN_CONFIG).write_text(dump_run_config({"a": None, "b": [1, 2], "c": 'q "x"\n', "d": 2e-4}, "train"))
    assert saved(tmp_path) == {"command": "train", "b": [1, 2], "c": 'q "x"\n', "d": 2e-4}
    assert ok("flags", "--markdown").output == table


def test_readme_flag_table_matches_the_code():
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- flags:start -->\n(.*?)<!-- flags:end -->", text, re.S)
    assert match, "README.md has no flag table: paste the output of `embtune flags --markdown` between " \
                  "<!-- flags:start --> and <!-- flags:end -->"
    assert match.group(1) == markdown_table(), "README flag table is stale: paste `embtune flags --markdown`"
