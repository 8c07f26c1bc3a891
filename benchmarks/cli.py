"""The ``genrec-bench`` command line.

    genrec-bench run [MATRIX.yaml | --preset NAME] [--datasets a,b] [--methods a,b]
                     [--seeds 0,1] [--output DIR] [--device DEV] [--protocol auto|masked|masked-keep-target|unmasked[,...]]
                     [--precision auto|fp32|bf16|fp16] [--refit] [--dry-run [--dry-steps N] [--dry-users M]] [--fail-fast] [--quiet]
                     [--estimate-only [--llm-shape Qwen2.5-1.5B]]
                     [--executor local|ray] [--jobs N] [--ray-address ADDR] [--cpus-per-cell N] [--gpus-per-cell N]
                     [--track mlflow|tensorboard [--track-uri URI]]
    genrec-bench report DIR [--open] [--cells-from RUN...]
    genrec-bench check RUN... [--references letter-table1|FILE ...] [--parity DIR ...] [--output DIR]
    genrec-bench gather DIR... --output FILE.parquet
    genrec-bench compare DIR|FILE.parquet... [--metric ndcg] [--k 10] [--split test] [--subset all]
    genrec-bench data stats NAME [--split loo|ratio] [--k-core K]
    genrec-bench data fetch NAME
    genrec-bench tokenize --dataset NAME --identifier SCHEME [--output DIR] [--seed N]
                          [--set key=value ...] [--cf-overlap auto|yes|no] [--table3] [--snapshot]
    genrec-bench plugins
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from benchmarks.errors import ConfigError, GenrecError
from benchmarks.evaluation.protocols import CHOICES as PROTOCOL_CHOICES


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _protocols(value: str) -> str | list[str]:
    """``--protocol``: one protocol name, or several comma-separated (a list)."""
    names = _csv(value)
    bad = [n for n in names if n not in PROTOCOL_CHOICES]
    if not names or bad or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected one or more distinct names among {', '.join(PROTOCOL_CHOICES)}, "
                                         f"comma-separated, got {value!r}")
    return names[0] if len(names) == 1 else names


DRY_RUN_COLUMNS = [("dataset", "dataset"), ("method", "method"), ("seed", "seed"), ("parameters", "parameters"),
                   ("trainable", "trainable"), ("state_mb", "state MB"), ("peak_rss_mb", "peak RSS MB"),
                   ("peak_cuda_mb", "peak CUDA MB"), ("seconds_per_step", "s/step"),
                   ("users_per_s", "users/s"), ("train_gib", "est. GPU train GiB"), ("eval_gib", "est. GPU eval GiB"),
                   ("fits_80gb", "fits 80 GB"), ("epoch_hours", "h/epoch here"), ("cell_hours", "h/cell here"),
                   ("error", "error")]

ESTIMATE_COLUMNS = [("dataset", "dataset"), ("method", "method"), ("seed", "seed"), ("parameters", "parameters"),
                    ("trainable", "trainable"), ("train_batch", "train batch"), ("eval_batch", "eval users"),
                    ("state_gib", "state GiB"), ("activation_gib", "activations GiB"),
                    ("train_gib", "train GiB"), ("eval_gib", "eval GiB"), ("fits_80gb", "fits 80 GB"),
                    ("activations_from", "activations from"), ("train_tflop_step", "train TFLOP/step"),
                    ("train_pflop_epoch", "train PFLOP/epoch"), ("train_pflop_cell", "train PFLOP/cell"),
                    ("gpu_train_hours", None), ("note", "note"), ("flops_error", "FLOPs not counted"),
                    ("error", "error")]


def dry_run_table(rows: list[dict], columns: list[tuple[str, str]] = DRY_RUN_COLUMNS) -> str:
    """The dry run's (or the estimate's, with ``ESTIMATE_COLUMNS``) rows as a Markdown table:
    state MB = weights + gradients + Adam moments (from the tensors), the peaks measured over
    the few steps and the ranking, the GPU estimate (:mod:`benchmarks.memory`) and the time
    projected from the measured steps (:func:`benchmarks.runner.projected_time`)."""
    cols = [(k, name) for k, name in columns if any(r.get(k) is not None for r in rows)]
    if any(k == "gpu_train_hours" for k, _ in cols):      # named by the rate it assumes
        from benchmarks.compute import GPU_HOURS_LABEL
        cols = [(k, GPU_HOURS_LABEL if k == "gpu_train_hours" else name) for k, name in cols]
    lines = ["| " + " | ".join(name for _, name in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(k) is None else str(r[k]) for k, _ in cols) + " |")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from benchmarks.matrix import load_matrix, select
    from benchmarks.report import write_report
    from benchmarks.runner import ProcessExecutor, RayExecutor, run_matrix

    matrix = load_matrix(args.matrix, args.preset)
    matrix = select(matrix, args.datasets, args.methods, args.seeds)
    if args.device:
        matrix.device = args.device
    if args.precision:
        from benchmarks.precision import check_precision
        matrix.precision = check_precision(args.precision, "--precision")
    if args.protocol or args.refit:   # the named evaluation protocol (benchmarks/evaluation/protocols.py)
        matrix.evaluation = {**matrix.evaluation, **({"protocol": args.protocol} if args.protocol else {}),
                             **({"refit": True} if args.refit else {})}
    if args.track_uri and not args.track:
        raise ConfigError("--track-uri: names where --track mlflow|tensorboard logs; give --track too")
    if args.jobs is not None and (args.dry_run or args.estimate_only):
        raise ConfigError("--jobs: runs the cells of a run on worker processes; a dry run or an estimate "
                          "runs in this process (drop --jobs)")
    if args.llm_shape and not args.estimate_only:
        raise ConfigError("--llm-shape: names the decoder-only shape of --estimate-only; give --estimate-only too")
    if args.estimate_only:
        from benchmarks.runner import estimate
        if args.dry_run or args.track:
            raise ConfigError("--estimate-only: trains nothing and writes no cells; drop --dry-run / --track")
        rows = estimate(matrix, llm_shape=args.llm_shape, progress=not args.quiet)
        print(dry_run_table(rows, ESTIMATE_COLUMNS))
        return 1 if any("error" in r for r in rows) else 0
    if args.dry_run:
        from benchmarks.runner import dry_run
        if args.track:
            raise ConfigError("--track: a dry run writes no cells to track; drop --track or --dry-run")
        for flag, value in (("--dry-steps", args.dry_steps), ("--dry-users", args.dry_users)):
            if value < 1:
                raise ConfigError(f"{flag}: expected an integer >= 1, got {value}")
        rows = dry_run(matrix, steps=args.dry_steps, users=args.dry_users, progress=not args.quiet)
        print(dry_run_table(rows))
        return 1 if any("error" in r for r in rows) else 0
    out = Path(args.output or Path("runs") / matrix.name)
    executor = None
    if args.jobs is not None and args.executor == "ray":
        raise ConfigError("--jobs is for the local executor; under --executor ray use --cpus-per-cell")
    if args.jobs is not None and args.jobs != 1:
        executor = ProcessExecutor(args.jobs)
    if args.executor == "ray":
        executor = RayExecutor(args.ray_address, cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell)
    summary = run_matrix(matrix, out, executor=executor, progress=not args.quiet, fail_fast=args.fail_fast,
                         track=args.track, track_uri=args.track_uri)
    from benchmarks import distributed
    if not distributed.is_main():
        return 0
    paths = write_report(out)
    print(f"{summary['cells']} cells: {summary['ran']} ran, {summary['skipped']} already done, "
          f"{len(summary['failed'])} failed -> {out}")
    print(paths["table.md"].read_text())
    for f in summary["failed"]:
        print(f"FAILED {f['cell']}: {f['error']}", file=sys.stderr)
    if args.track:
        print(f"tracked {summary['tracked']} cell(s) -> {summary['tracked_to']}")
        for f in summary["tracking_failed"]:
            print(f"TRACKING FAILED {f['cell']} (the cell is kept; run the same command again to log it): "
                  f"{f['error']}", file=sys.stderr)
    return 1 if summary["failed"] or summary.get("tracking_failed") else 0


def cmd_report(args) -> int:
    from benchmarks.report import write_report

    if args.cells_from:   # gather finished cells of several runs into DIR, then report DIR
        from benchmarks.rundir import RunDir

        run = RunDir(Path(args.dir))
        copied = run.adopt_cells([RunDir(Path(p)) for p in args.cells_from])
        run.collect_results()
        print(f"gathered {len(copied)} new cells into {args.dir}")
    paths = write_report(Path(args.dir))
    print(paths["report.md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.open:
        print(open_in_browser(paths["report.html"]))
    return 0


def cmd_check(args) -> int:
    from benchmarks.reference_check import load_references, write_check

    refs = [load_references(r) for r in (args.references or ["letter-table1"])]
    out, md = write_check([Path(r) for r in args.runs], refs, [Path(p) for p in args.parity],
                          Path(args.output) if args.output else None)
    print(md)
    print(f"wrote {out / 'check.md'}, {out / 'check.csv'}")
    return 0


def open_in_browser(page: Path) -> str:
    """Open ``page`` with Python's webbrowser (the user's default, or $BROWSER); what happened,
    as a line to print. Where no browser can be found (a server without one) it says so."""
    import webbrowser

    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return (f"no browser found here (Python's webbrowser finds none; set BROWSER to one): "
                f"open {page} where there is one")
    name = getattr(browser, "name", "") or type(browser).__name__
    if not browser.open(page.resolve().as_uri()):
        return f"the browser {name} did not open {page}"
    return f"opened {page} in {name}"


def cmd_gather(args) -> int:
    from benchmarks.gather import gather, write_gathered

    df = gather(args.dirs)
    path = write_gathered(df, args.output)
    print(f"{len(df):,} rows from {df['run'].nunique()} run folder(s) -> {path}")
    return 0


def cmd_compare(args) -> int:
    from tabulate import tabulate
    from benchmarks.gather import compare_table, load, run_summary

    df = load(args.sources)
    table = compare_table(df, metric=args.metric, k=args.k, split=args.split, subset=args.subset)
    print(f"{args.metric}@{args.k} ({args.split}, {args.subset} users); mean over seeds, ± std where several")
    print(tabulate(table.values.tolist(), headers=list(table.columns), tablefmt=args.format,
                   disable_numparse=True))
    for line in run_summary(df):
        print(f"  {line}")
    return 0


def _dataset_entry(args) -> str | dict:
    extra = {}
    if args.split:
        extra["split"] = args.split
    if args.k_core is not None:
        extra["k_core"] = args.k_core
    return {"name": args.name, **extra} if extra else args.name


def cmd_data(args) -> int:
    from benchmarks.data.catalog import load_dataset, spec_from_config

    if args.data_cmd == "fetch":
        reader_args, source = spec_from_config(args.name).resolve()
        print(f"{args.name}: {source}\n  files: {reader_args}")
        return 0
    ds = load_dataset(_dataset_entry(args))
    stats = ds.stats()
    if args.json:
        print(json.dumps({**stats, "source": ds.info.get("source")}, indent=2))
        return 0
    from tabulate import tabulate
    rows = [(k, f"{v:,}" if isinstance(v, int) else v) for k, v in stats.items()]
    rows.append(("source", ds.info.get("source")))
    print(tabulate(rows, tablefmt="simple"))
    return 0


def _overrides(pairs: list[str] | None) -> dict:
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_tokenize(args) -> int:
    import pandas as pd
    from benchmarks.tokenize import tokenize

    out = tokenize(args.dataset, args.identifier, overrides=_overrides(args.set), seed=args.seed,
                   output=Path(args.output) if args.output else None, cf_overlap=args.cf_overlap,
                   table3=args.table3, device=args.device or "cpu", progress=not args.quiet,
                   snapshot=args.snapshot)
    stats = pd.read_csv(out / "stats.csv")
    from tabulate import tabulate
    print(tabulate(stats.values.tolist(), headers=list(stats.columns), tablefmt="simple", floatfmt=".4g"))
    if args.snapshot:
        snap = json.loads((out / "config.json").read_text())["snapshot"]
        since = snap["since_last_point"]
        print(f"snapshot at epoch {snap['epoch']} of {snap['of_epochs']}; since epoch {since['from_epoch']}: "
              f"codes changed for {since['changed']} of the items (per level {since['changed_levels']})")
    print(f"wrote {out}")
    return 0


def cmd_plugins(args) -> int:
    from tabulate import tabulate
    from benchmarks.registry import IDENTIFIERS, METHODS

    def first_line(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0][:70] if cls.__doc__ else ""

    rows = [(n, METHODS.get(n).family_of() or "(its identifier's)", METHODS.origin(n), first_line(METHODS.get(n)))
            for n in METHODS.names()]
    print(tabulate(rows, headers=["method", "family", "from", "description"], tablefmt="simple"))
    rows = [(n, IDENTIFIERS.get(n).kind, IDENTIFIERS.origin(n), first_line(IDENTIFIERS.get(n)))
            for n in IDENTIFIERS.names()]
    if rows:
        print()
        print(tabulate(rows, headers=["identifier", "kind", "from", "description"], tablefmt="simple"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genrec-bench", description="Benchmark generative-recommendation "
                                "identifier schemes and traditional baselines through one harness.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a matrix (datasets x methods x seeds); resumable")
    r.add_argument("matrix", nargs="?", help="matrix YAML file")
    r.add_argument("--preset", help="a built-in matrix (benchmarks/presets/): quick, coldstart, fidelity or paper")
    r.add_argument("--datasets", type=_csv, help="comma-separated dataset names (filter/override)")
    r.add_argument("--methods", type=_csv, help="comma-separated: a matrix label selects that entry; a "
                   "method name that is no label selects every entry of that method; a method the "
                   "matrix lacks runs with its defaults")
    r.add_argument("--seeds", type=_ints, help="comma-separated seeds, e.g. 0,1,2")
    r.add_argument("--output", help="run directory (default runs/<matrix name>)")
    r.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides the matrix)")
    r.add_argument("--precision", help="auto, fp32, bf16, fp16 (overrides the matrix; auto: bf16 on a CUDA "
                   "device with bf16, else fp32)")
    r.add_argument("--protocol", type=_protocols, metavar="|".join(PROTOCOL_CHOICES),
                   help="evaluation protocol (overrides the matrix): masked = history items removed from "
                        "the ranking, masked-keep-target = the same except the user's target (RecBole's "
                        "general-model rule), unmasked = ranked (the generative papers' code), auto = "
                        "masked where no target repeats a history item. Comma-separated for several "
                        "(e.g. masked,unmasked): one cell per protocol, and one training for all of them "
                        "where the method trains through the suite's loop (each protocol early-stopped on "
                        "its own validation score)")
    r.add_argument("--refit", action="store_true",
                   help="protocol option: refit non-sequential methods (MostPop, MF, LightGCN) on "
                        "training + validation for their best epoch count before the test ranking")
    r.add_argument("--fail-fast", action="store_true", help="stop at the first failing cell")
    r.add_argument("--dry-run", action="store_true",
                   help="build every cell at its real size, train --dry-steps steps, rank --dry-users test "
                        "users, print parameters and memory per cell; writes no run folder")
    r.add_argument("--estimate-only", action="store_true",
                   help="print every cell's estimated GPU memory (train step, evaluation, fits 80 GB) without "
                        "training: modules with a formula on the meta device, identifiers from a 1-epoch tokenizer")
    r.add_argument("--llm-shape", default=None,
                   help="with --estimate-only: the decoder-only shape (e.g. Qwen2.5-1.5B) of cells whose checkpoint "
                        "is not a local folder")
    r.add_argument("--dry-steps", type=int, default=3, help="optimiser steps per cell in a dry run")
    r.add_argument("--dry-users", type=int, default=32, help="test users ranked per cell in a dry run")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: cells one after another in this process; ray: one Ray task per cell")
    r.add_argument("--jobs", type=int,
                   help="local executor: run the cells on N worker processes of this machine, the CPUs "
                        "shared among them (default: one cell after another in this process)")
    r.add_argument("--ray-address", help="Ray cluster address (default: start a local cluster)")
    r.add_argument("--cpus-per-cell", type=float, default=1, help="Ray resources per cell (CPUs)")
    r.add_argument("--gpus-per-cell", type=float, default=0, help="Ray resources per cell (GPUs)")
    r.add_argument("--track", choices=["mlflow", "tensorboard"],
                   help="log each finished cell: one MLflow run (params, per-epoch and final metrics, tags, "
                        "the cell folder as artefacts) or TensorBoard event files; needs "
                        "pip install 'genrec-bench[track]'")
    r.add_argument("--track-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else MLflow's "
                   "default) or TensorBoard log folder (default: DIR/tensorboard)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="write the report (md, html), tables (md, tex, csv) and figures of a run directory")
    rep.add_argument("dir")
    rep.add_argument("--open", action="store_true",
                     help="then open report.html in the browser (Python's webbrowser; says so where there is none)")
    rep.add_argument("--cells-from", nargs="+", metavar="RUN", default=[],
                     help="first copy the finished cells of these run directories into DIR "
                          "(one report over several runs, e.g. one per protocol)")
    rep.set_defaults(func=cmd_report)

    ck = sub.add_parser("check", help="a run's figures beside a paper's table and RecBole's on the same split")
    ck.add_argument("runs", nargs="+", metavar="RUN", help="run or report folders (their results.csv)")
    ck.add_argument("--references", nargs="+", metavar="NAME|FILE",
                    help="reference files, or shipped ones by name (default: letter-table1; also rpg-table2)")
    ck.add_argument("--parity", nargs="+", metavar="DIR", default=[],
                    help="parity folders (python -m benchmarks.parity.recbole --output DIR): RecBole's figures")
    ck.add_argument("--output", help="folder for check.md / check.csv (default: the first RUN)")
    ck.set_defaults(func=cmd_check)

    g = sub.add_parser("gather", help="join the results of run folders into one Parquet table")
    g.add_argument("dirs", nargs="+", metavar="DIR", help="run folders (with results.csv / results.parquet)")
    g.add_argument("--output", required=True, help="the Parquet file to write, e.g. all.parquet")
    g.set_defaults(func=cmd_gather)

    c = sub.add_parser("compare", help="one metric as a method x dataset table across runs")
    c.add_argument("sources", nargs="+", metavar="DIR|FILE", help="run folders and / or `gather` Parquet files")
    c.add_argument("--metric", default="ndcg", help="recall, ndcg, users_per_s ... (default ndcg)")
    c.add_argument("--k", type=int, default=10, help="cut-off (default 10)")
    c.add_argument("--split", default="test", choices=["valid", "test"])
    c.add_argument("--subset", default="all", help="all, warm, cold, pop1 ... (default all)")
    c.add_argument("--format", default="github", help="a tabulate table format (github, simple, latex ...)")
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("data", help="datasets: statistics, fetching")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    st = dsub.add_parser("stats", help="users, items, interactions, lengths, density, split sizes")
    st.add_argument("name", help="catalog name (ml-100k, ml-1m, beauty, yelp, sports, setrec-beauty, amazon2023:<Category>, ...)")
    st.add_argument("--split", choices=["loo", "ratio", "fixed"], help="override the split")
    st.add_argument("--k-core", type=int, help="override the k-core filter")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_data)
    fe = dsub.add_parser("fetch", help="download (or locate) a dataset's files")
    fe.add_argument("name", help="catalog name, e.g. ml-100k, beauty, amazon2023:Musical_Instruments")
    fe.set_defaults(func=cmd_data)

    tk = sub.add_parser("tokenize", help="build a scheme's item identifiers, stats and figures")
    tk.add_argument("--dataset", required=True, help="catalog name (ml-100k, beauty, ...)")
    tk.add_argument("--identifier", required=True, help="scheme name (see `genrec-bench plugins`)")
    tk.add_argument("--output", help="folder (default runs/tokenize/<dataset>/<scheme>-<hash>)")
    tk.add_argument("--seed", type=int, default=0)
    tk.add_argument("--set", action="append", metavar="KEY=VALUE", help="scheme config override (repeatable)")
    tk.add_argument("--cf-overlap", choices=["auto", "yes", "no"], default="auto",
                    help="LETTER Table 4 overlap: auto = when CF embeddings are at hand; yes = train them")
    tk.add_argument("--table3", action="store_true", help="LETTER Table 3: SASRec on the quantised embeddings")
    tk.add_argument("--device", help="cpu, cuda ...")
    tk.add_argument("--snapshot", action="store_true",
                    help="analyse the unfinished training run's checkpoint as it stands (no training, "
                         "nothing cached); the same --set / --seed as the run")
    tk.add_argument("--quiet", action="store_true")
    tk.set_defaults(func=cmd_tokenize)

    pl = sub.add_parser("plugins", help="list registered methods and identifier schemes")
    pl.set_defaults(func=cmd_plugins)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except GenrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
