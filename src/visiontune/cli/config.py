"""``visiontune config show|keys``: the resolved config of a command line, and every key of the schema."""

from __future__ import annotations

import argparse

from visiontune.cli._common import Command, add_config_arguments, add_verbose


def run_show(args: argparse.Namespace) -> int:
    """Print the config that ``-c cfg.yaml key=value ...`` resolves to, as YAML (what ``train`` would use)."""
    import yaml

    from visiontune.config import config_to_dict, load_config

    config = load_config(args.config, args.overrides)
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0


def run_keys(args: argparse.Namespace) -> int:
    """Print the keys of the schema (of one section or key) with type, default and documentation."""
    from visiontune.config.keys import format_keys, schema_keys, section_doc, sections

    if args.section is not None:
        keys = schema_keys(args.section)
        doc = section_doc(args.section)
        print(f"{args.section}: {doc}\n" if doc else "", end="")
        print(format_keys(keys))
        return 0
    print("# top level")
    print(format_keys(schema_keys("")))
    for section in sections():
        print(f"\n# {section}: {section_doc(section).splitlines()[0] if section_doc(section) else ''}".rstrip())
        print(format_keys(schema_keys(section)))
    return 0


def _configure_config(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="<action>", title="actions")
    show = actions.add_parser(
        "show", help="print the resolved config (YAML) of -c cfg.yaml and key=value overrides",
        description="Print the config that a YAML file and overrides resolve to, every key included, as YAML; "
                    "unknown keys and wrong types are errors as in every command.",
        epilog="examples:\n"
               "  visiontune config show -c configs/classification/mobilenetv2_100.yaml optim.lr=0.002\n"
               "  visiontune config show task=face_detection > cfg.yaml     # a complete config to edit",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(show, run_show)
    keys = actions.add_parser(
        "keys", help="list every config key (or a section's) with type, default and documentation",
        description="List the config keys with their type, default and documentation from the schema.",
        epilog="examples:\n"
               "  visiontune config keys              # all sections\n"
               "  visiontune config keys optim        # one section\n"
               "  visiontune config keys export.half  # one key",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    keys.add_argument("section", nargs="?", help="a section (optim, export, ...) or a dotted key; default: all")
    add_verbose(keys)
    keys.set_defaults(handler=run_keys)


COMMANDS = (
    Command(
        "config", "show the resolved config, or list every key with type, default and documentation",
        "  visiontune config show -c cfg.yaml data.root=data/flowers optim.lr=0.002\n"
        "  visiontune config keys optim\n"
        "  visiontune config keys",
        _configure_config,
    ),
)
