"""safe_output_names: every file name taken from user data stays inside the output folder."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import pytest

from visiontune.utils.paths import flatten_name, safe_output_names


@pytest.mark.parametrize("name, expected, escaping", [
    ("party/a.jpg", "party/a.jpg", False),
    ("./a//b/c.jpg", "a/b/c.jpg", False),
    ("../../escape/v.jpg", "escape/v.jpg", True),
    ("a/../../b/v.jpg", "a/b/v.jpg", True),
    ("/home/me/v.jpg", "home/me/v.jpg", True),
    ("C:\\x\\v.jpg", "x/v.jpg", True),
    ("C:v.jpg", "v.jpg", True),
    ("c:/x/v.jpg", "x/v.jpg", True),
    ("a/D:/v.jpg", "a/v.jpg", True),
    ("\\\\host\\share\\v.jpg", "host/share/v.jpg", True),
    ("sub\\..\\..\\v.jpg", "sub/v.jpg", True),
])
def test_flatten_name_drops_every_part_that_leads_out(name: str, expected: str, escaping: bool):
    assert flatten_name(name) == (PurePosixPath(expected), escaping)


@pytest.mark.parametrize("name", ["..", "/", "C:\\", "../..", "./"])
def test_flatten_name_of_nothing_but_escapes_is_none(name: str):
    assert flatten_name(name)[0] is None


def test_names_lose_their_suffix_and_go_under_the_folder(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING):
        names = safe_output_names(tmp_path / "out", ["a.jpg", "sub/b.v2.png", "c"], source="src.json",
                                  suffixes=(".png",), folder="overlays")
    assert names == [PurePosixPath("overlays/a"), PurePosixPath("overlays/sub/b.v2"), PurePosixPath("overlays/c")]
    assert caplog.records == []  # nothing renamed, nothing said
    assert not (tmp_path / "out").exists()  # nothing created


def test_escaping_names_are_flattened_with_one_warning_line(tmp_path: Path, caplog):
    out = tmp_path / "out"
    hostile = ["../../escape/v.jpg", "/etc/w.jpg", "C:\\x\\y.jpg", "fine.jpg"]
    with caplog.at_level(logging.WARNING):
        names = safe_output_names(out, hostile, source="data.json", suffixes=(".png",), folder="overlays")
    assert names == [PurePosixPath("overlays/escape/v"), PurePosixPath("overlays/etc/w"), PurePosixPath("overlays/x/y"),
                     PurePosixPath("overlays/fine")]
    assert all(out.resolve() in (out / f"{name}.png").resolve().parents for name in names)
    assert [record.levelno for record in caplog.records] == [logging.WARNING]
    assert caplog.records[0].getMessage() == (
        f"data.json: image name '../../escape/v.jpg' leads out of the output folder {out}; writing its files as "
        "overlays/escape/v.png inside it (and 2 more)")


def test_flat_keeps_the_last_component(tmp_path: Path):
    assert safe_output_names(tmp_path, ["a/b/v.jpg", "..\\w.jpg"], source="eval", folder="overlays", flat=True) == [
        PurePosixPath("overlays/v"), PurePosixPath("overlays/w")]


@pytest.mark.parametrize("names, stem", [(["../x/v.jpg", "x/v.jpg"], "x/v"), (["a.jpg", "a.png"], "a"),
                                         (["C:\\x\\v.jpg", "/x/v.png"], "x/v")])
def test_two_names_that_become_one_are_refused(tmp_path: Path, names: list[str], stem: str):
    with pytest.raises(ValueError) as error:
        safe_output_names(tmp_path, names, source="data.json", suffixes=(".png",))
    assert str(error.value) == (f"data.json: images {names[0]!r} and {names[1]!r} would both be written as {stem}.* "
                                f"in {tmp_path}; rename one or predict them separately")


def test_a_name_with_nothing_left_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match=r"^data.json: image name '\.\./\.\.' leaves no file name once its '\.\.', "
                                         r"root and drive parts are dropped$"):
        safe_output_names(tmp_path, ["ok.jpg", "../.."], source="data.json")


def test_a_folder_link_leading_out_is_refused(tmp_path: Path):
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    (out / "overlays").mkdir(parents=True)
    (out / "overlays" / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError) as error:
        safe_output_names(out, ["a.jpg", "sub/b.jpg"], source="src", suffixes=(".png",), folder="overlays")
    assert str(error.value) == (f"{out / 'overlays' / 'sub'} is a symbolic link to {outside.resolve()}, outside the "
                                f"output folder {out}: remove the link or choose another output folder")
    # the link itself as the whole sub-folder
    (out / "overlays" / "sub").unlink()
    (out / "overlays").rmdir()
    (out / "overlays").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"overlays is a symbolic link to .*outside, outside the output folder"):
        safe_output_names(out, ["a.jpg"], source="src", suffixes=(".png",), folder="overlays")
    assert list(outside.iterdir()) == []


def test_a_file_link_leading_out_is_refused_even_dangling(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.json").symlink_to(tmp_path / "victim.json")  # dangling: writing would create the victim
    with pytest.raises(ValueError, match=r"a\.json is a symbolic link to .*victim\.json, outside the output folder"):
        safe_output_names(out, ["a.jpg"], source="src", suffixes=(".json", ".jpg"))
    assert not (tmp_path / "victim.json").exists()
    # a suffix the caller does not write is not looked at
    assert safe_output_names(out, ["a.jpg"], source="src", suffixes=(".png",)) == [PurePosixPath("a")]


def test_links_that_stay_inside_are_followed(tmp_path: Path):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "alias").symlink_to(out / "real", target_is_directory=True)
    assert safe_output_names(out, ["alias/v.jpg"], source="src", suffixes=(".json",)) == [PurePosixPath("alias/v")]
    # an output folder that is itself a link is the user's choice
    linked = tmp_path / "linked"
    linked.symlink_to(out, target_is_directory=True)
    assert safe_output_names(linked, ["alias/v.jpg"], source="src", suffixes=(".json",)) == [
        PurePosixPath("alias/v")]


def test_a_file_where_a_folder_is_wanted_is_left_to_the_writer(tmp_path: Path):
    (tmp_path / "sub").write_text("a file")
    assert safe_output_names(tmp_path, ["sub/v.jpg"], source="src", suffixes=(".json",)) == [PurePosixPath("sub/v")]
