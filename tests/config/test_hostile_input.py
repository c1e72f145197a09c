"""Hostile or odd input to ``-c`` and ``key=value`` ends fast, with one line naming the file, line or key, and exit
status 2; text keys read their values as text."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from visiontune.cli import main
from visiontune.config import load_config
from visiontune.config.yaml_io import MAX_ALIAS_VALUES, MAX_CONFIG_BYTES, MAX_NESTING


def run(capsys, *argv: str) -> tuple[int, str, str, float]:
    """Exit status, stdout, stderr and seconds of ``visiontune <argv>`` run in this process."""
    start = time.perf_counter()
    code = main(list(argv))
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    return code, captured.out, captured.err, seconds


def assert_error(result: tuple[int, str, str, float], message: str) -> None:
    """Exit status 2 and exactly the one line ``visiontune config: error: <message>`` (no traceback)."""
    code, _, err, _ = result
    assert (code, err) == (2, f"visiontune config: error: {message}\n")


def shown(out: str) -> dict:
    return yaml.safe_load(out)


# ------------------------------------------------------------------------------------------ aliases and nesting


def billion_laughs(levels: int = 9, copies: int = 9) -> str:
    lines = ["a: &a [" + ", ".join(["lol"] * copies) + "]"]
    for previous, name in zip("abcdefghijklmnopqrstuvwxyz", "bcdefghijklmnopqrstuvwxyz"[:levels - 1]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * copies) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_ends_in_under_a_second_naming_the_file(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    result = run(capsys, "config", "show", "-c", str(path))
    assert_error(result, f"{path}: invalid YAML (line 5, column 8): the aliases (here *d) repeat more than "
                         f"{MAX_ALIAS_VALUES} values; a config needs far fewer")
    assert result[3] < 1.0


def test_an_alias_bomb_in_an_override_and_a_self_referring_alias_end_in_one_line(tmp_path, capsys):
    bomb = "{" + ", ".join(line.replace(": ", ": ", 1) for line in billion_laughs().splitlines()) + "}"
    result = run(capsys, "config", "show", f"model.kwargs={bomb}")
    assert result[0] == 2 and result[2].count("\n") == 1 and result[3] < 1.0
    assert "YAML cannot read it (line 1, column " in result[2] and "the aliases (here *d) repeat more" in result[2]
    path = tmp_path / "loop.yaml"
    path.write_text("model:\n  kwargs: &k\n    a: [1, *k]\n")
    assert_error(run(capsys, "config", "show", "-c", str(path)),
                 f"{path}: invalid YAML (line 3, column 12): alias *k refers to the collection that contains it")


def test_aliases_and_merge_keys_of_a_real_config_still_work(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  kwargs:\n    base: &b {depth: 2, width: 4}\n    other:\n      <<: *b\n      width: 3\n"
                    "sched:\n  milestones: &m [2, 4]\nface:\n  steps: *m\n")
    code, out, err, _ = run(capsys, "config", "show", "-c", str(path))
    assert (code, err) == (0, "")
    assert shown(out)["model"]["kwargs"]["other"] == {"depth": 2, "width": 3} and shown(out)["face"]["steps"] == [2, 4]


def test_a_deep_dotted_override_is_refused_in_one_line(capsys):
    key = "model.kwargs." + ".".join(["a"] * 500)
    assert_error(run(capsys, "config", "show", f"{key}=1"),
                 f"override key 'model.kwargs.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a....' has 502 parts; config "
                 f"keys have at most {MAX_NESTING}")
    key = ".".join(["a"] * 500)
    assert run(capsys, "config", "show", f"{key}=1")[2].startswith("visiontune config: error: override key 'a.a.a.")


def test_a_deep_yaml_list_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\nmodel:\n  kwargs: " + "[" * 5000 + "]" * 5000 + "\n")
    result = run(capsys, "config", "show", "-c", str(path))
    assert_error(result, f"{path}: invalid YAML (line 3, column {11 + MAX_NESTING}): collections nested deeper "
                         f"than {MAX_NESTING} levels (a config needs a few)")
    assert result[3] < 1.0


def test_a_deep_yaml_list_in_an_override_is_one_short_line(capsys):
    result = run(capsys, "config", "show", "model.kwargs=" + "[" * 5000 + "]" * 5000)
    assert_error(result, "model.kwargs: " + "[" * 57 + "... looks like a YAML flow sequence, but YAML cannot read it "
                         f"(line 1, column {MAX_NESTING + 1}): collections nested deeper than {MAX_NESTING} levels (a "
                         "config needs a few)")


# ------------------------------------------------------------------------------------------ characters and bytes


def test_a_control_character_in_an_override_names_the_key_and_the_character(capsys):
    assert_error(run(capsys, "config", "show", "name=a\x01b"),
                 "name: expected text without control characters, got 'a\\x01b' (U+0001 at character 2) "
                 "(override 'name=a\\x01b')")
    assert_error(run(capsys, "config", "show", "data.root=/d\x1b[31m"),
                 "data.root: expected text without control characters, got '/d\\x1b[31m' (U+001B at character 3) "
                 "(override 'data.root=/d\\x1b[31m')")


def test_a_control_character_in_a_file_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("task: classification\nname: a\x01b\n")
    assert_error(run(capsys, "config", "show", "-c", str(path)),
                 f"{path}: invalid YAML (line 2, column 8): character U+0001 is not allowed (a control character)")
    path.write_text('name: "a\\x01b"\n')  # an escape in a quoted string makes the character
    assert_error(run(capsys, "config", "show", "-c", str(path)),
                 f"name: expected text without control characters, got 'a\\x01b' (U+0001 at character 2) ({path}:1)")


@pytest.mark.parametrize("utf8_mode", ["1", "0"], ids=["utf8-mode", "ascii-argv"])
def test_a_non_ascii_data_root_works_under_the_c_locale(tmp_path, utf8_mode):
    folder = tmp_path / "données"
    folder.mkdir()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": utf8_mode}
    argv = [sys.executable, "-m", "visiontune", "config", "show", os.fsencode(f"data.root={folder}")]
    result = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    root = yaml.safe_load(result.stdout)["data"]["root"]
    # without UTF-8 mode the command line arrives as surrogate-escaped ASCII: the same bytes name the folder
    assert root == (str(folder) if utf8_mode == "1" else os.fsencode(folder).decode("ascii", "surrogateescape"))
    assert root.encode("utf-8", "surrogateescape") == os.fsencode(folder)


def test_invalid_utf8_names_the_file_and_the_byte(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"task: classification\nname: caf\xe9\n")
    assert_error(run(capsys, "config", "show", "-c", str(path)),
                 f"{path}: not UTF-8 text: byte 0xe9 at offset 30 (line 2, column 10); save it as UTF-8")
    path.write_bytes("name: x\n".encode("utf-16"))
    assert_error(run(capsys, "config", "show", "-c", str(path)),
                 f"{path}: not UTF-8 text: byte 0xff at offset 0 (line 1, column 1); it looks like UTF-16: save it as "
                 "UTF-8")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: caf\xc3\xa9\noptim:\n  lr: 0.5\n")
    code, out, err, _ = run(capsys, "config", "show", "-c", str(path))
    assert (code, err) == (0, "")
    assert shown(out)["name"] == "café" and shown(out)["optim"]["lr"] == 0.5


# ------------------------------------------------------------------------------------------ what -c may name


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_without_opening_it(tmp_path):
    pipe = tmp_path / "cfg.yaml"
    os.mkfifo(pipe)
    code = f"from visiontune.cli import main; raise SystemExit(main(['config', 'show', '-c', {str(pipe)!r}]))"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (
        2, f"visiontune config: error: {pipe} is not a regular file (a named pipe); give a YAML file\n")
    assert time.perf_counter() - start < 30


def test_a_folder_is_refused_and_a_missing_file_named(tmp_path, capsys):
    assert_error(run(capsys, "config", "show", "-c", str(tmp_path)),
                 f"{tmp_path} is not a regular file (a directory); give a YAML file")
    assert_error(run(capsys, "config", "show", "-c", str(tmp_path / "no.yaml")),
                 f"config file not found: {tmp_path / 'no.yaml'}")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    with open(path, "wb") as file:
        file.truncate(MAX_CONFIG_BYTES + 1)  # sparse: nothing is written
    result = run(capsys, "config", "show", "-c", str(path))
    assert_error(result, f"{path}: {MAX_CONFIG_BYTES + 1} bytes is too large for a config file (at most 8 MiB)")
    assert result[3] < 1.0


# ------------------------------------------------------------------------------------------ text keys read text


@pytest.mark.parametrize("given", ["off", "no", "yes", "on", "true", "1e3", "0x10", "1.50", "null", "~", "[a]",
                                   "a: b", "a #b"])
def test_a_text_key_takes_the_override_as_given(capsys, given):
    code, out, err, _ = run(capsys, "config", "show", f"name={given}", f"train.metric={given}")
    assert (code, err) == (0, "")
    config = shown(out)
    assert config["name"] == given
    assert config["train"]["metric"] == (None if given in ("null", "~") else given)  # null only where it may be


def test_quotes_empty_values_and_choices_of_text_keys(capsys):
    config = load_config(None, ["name='off'", 'project="a b"', "data.root=", "data.image_ext=", "train.amp=off",
                                "train.metric_mode=null", "model.init=none"])
    assert (config.name, config.project, config.data.root, config.data.image_ext) == ("off", "a b", None, "")
    assert (config.train.amp, config.train.metric_mode, config.model.init) == ("off", None, "none")
    assert_error(run(capsys, "config", "show", "train.amp=no"),
                 "train.amp: expected one of 'auto' | 'off' | 'bf16' | 'fp16', got 'no' (override 'train.amp=no')")


def test_text_items_of_a_list_take_the_text(capsys):
    assert load_config(None, ["data.categories=[no, person, 1.50]"]).data.categories == ["no", "person", "1.50"]


def test_a_file_reads_unquoted_text_as_text_with_one_warning_line_each(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("name: off\ndata:\n  root: null\n  categories: [no, person]\ntrain:\n  amp: off\n"
                    "  metric: 'yes'\n  metric_mode: null\nproject: 2017\n")
    code, out, err, _ = run(capsys, "config", "show", "-c", str(path))
    assert code == 0
    assert err.splitlines() == [
        f"{path}:1: name: the unquoted 'off' is read as text, not as False (quote it to say so)",
        f"{path}:4: data.categories[0]: the unquoted 'no' is read as text, not as False (quote it to say so)",
    ]
    config = shown(out)
    assert (config["name"], config["data"]["root"], config["data"]["categories"]) == ("off", None, ["no", "person"])
    assert (config["train"]["amp"], config["train"]["metric"], config["train"]["metric_mode"]) == ("off", "yes", None)
    assert config["project"] == "2017"


def test_a_key_that_takes_booleans_keeps_yaml_booleans(capsys):
    config = load_config(None, ["train.channels_last=off", "finetune.cache_features=no", "train.ema=yes"])
    assert (config.train.channels_last, config.finetune.cache_features, config.train.ema) == (False, False, True)


# ------------------------------------------------------------------------------------------ flow collections


def test_an_unquoted_flow_mapping_key_says_what_yaml_found_and_the_fix(capsys):
    assert_error(run(capsys, "config", "show", r"finetune.lr_mults={features\.1[345]: 1.5}"),
                 r"finetune.lr_mults: {features\.1[345]: 1.5} looks like a YAML flow mapping, but YAML cannot read "
                 r"it (line 1, column 13): while parsing a flow mapping; expected ',' or '}', but got '['; quote the "
                 "keys: "
                 "\"finetune.lr_mults={'features\\.1[345]': 1.5}\"")
    fixed = load_config(None, [r"finetune.lr_mults={'features\.1[345]': 1.5}"])
    assert fixed.finetune.lr_mults == {r"features\.1[345]": 1.5}


def test_a_broken_flow_sequence_of_a_list_key_says_what_yaml_found(capsys):
    code, _, err, _ = run(capsys, "config", "show", "finetune.freeze=[blocks\\.[01], head")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("visiontune config: error: finetune.freeze: [blocks\\.[01], head looks like a YAML flow "
                          "sequence, but YAML cannot read it (line 1, column ")
