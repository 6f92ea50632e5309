"""`gridtune data build RECIPE`, `data info DIR`, `data export DIR`, `data import SRC`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build and inspect OPF-labelled datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    b = dsub.add_parser("build", help="build (or resume, or extend) a dataset from a recipe")
    b.add_argument("recipe", help="recipe .toml, or a default case name (its shipped recipe)")
    b.add_argument("--out", type=Path, help="dataset directory (default: the cache, by recipe hash)")
    b.add_argument("--samples", type=int, help="number of scenarios (overrides the recipe)")
    b.add_argument("--workers", type=int, help="processes (default: all cores)")
    b.add_argument("--backend", default="local", help="local (process pool) or ray")
    b.set_defaults(func=_build)

    i = dsub.add_parser("info", help="counts per status, load-scale range, solve times, baseline")
    i.add_argument("directory", type=Path)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--verify", action="store_true", help="check every file's size and SHA-256 "
                   "against checksums.json and every parquet page CRC (reads all data)")
    i.set_defaults(func=_info)

    e = dsub.add_parser("export", help="write a dataset as OPFData JSON (torch_geometric's OPFDataset reads it)")
    e.add_argument("directory", type=Path, help="a built dataset directory")
    e.add_argument("--format", required=True, choices=["opfdata"], help="output format")
    e.add_argument("--out", type=Path, required=True, help="root directory to write (empty or new)")
    e.add_argument("--case-name", help="OPFDataset case_name (default: gridtune_<grid>)")
    e.add_argument("--split-seed", type=int, default=0, help="seed of gridtune's split (default: 0)")
    e.set_defaults(func=_export)

    m = dsub.add_parser("import", help="read OPFData JSON into a dataset directory")
    m.add_argument("source", type=Path, help="an OPFData root, release, case or group folder")
    m.add_argument("--format", required=True, choices=["opfdata"], help="input format")
    m.add_argument("--out", type=Path, required=True, help="dataset directory to write (empty or new)")
    m.add_argument("--name", help="grid name (default: the case folder's name)")
    m.set_defaults(func=_import)


def _build(args: argparse.Namespace) -> int:
    from gridtune.grids.keys import finished_dataset
    from gridtune.grids.recipe import recipe_for
    from gridtune.grids.storage import read_manifest
    from gridtune.parallel import check_backend, check_workers

    check_backend(args.backend)
    check_workers(args.workers)
    recipe = recipe_for(args.recipe, samples=args.samples)
    finished = finished_dataset(recipe, args.out)  # nothing to do: answered without pandapower
    if finished is not None:
        print(_format_info(finished, read_manifest(finished)))
        return 0
    from gridtune.grids.build import build_dataset, default_directory

    directory = args.out if args.out is not None else default_directory(recipe)
    build_dataset(recipe, directory, workers=args.workers, backend=args.backend)
    manifest = read_manifest(directory)
    print(_format_info(directory, manifest))
    return 0


def _info(args: argparse.Namespace) -> int:
    from gridtune.grids.storage import read_manifest, verify_dataset

    manifest = read_manifest(args.directory)
    checked = verify_dataset(args.directory, deep=args.verify)
    if args.json:
        keys = ("grid", "samples", "counts", "unknown_share", "feasible_share", "certificates",
                "load_scale_range", "solve_time_s", "baseline", "content_hash", "cache_key",
                "schema_version", "ratings", "calibration", "recipe")
        print(json.dumps({k: manifest.get(k) for k in keys}, indent=2, default=str))
    else:
        print(_format_info(args.directory, manifest))
        if args.verify:
            print(f"verified   {checked} files: sizes, SHA-256 and parquet page CRCs match")
    return 0


def _export(args: argparse.Namespace) -> int:
    from gridtune.grids.opfdata import export_opfdata

    s = export_opfdata(args.directory, args.out, case_name=args.case_name, split_seed=args.split_seed)
    ex = s["examples"]
    print(f"wrote {sum(ex.values())} solved examples (train {ex['train']}, val {ex['val']}, test "
          f"{ex['test']}) and {s['unsolved']} unsolved scenarios (statuses in raw/gridtune/) to {s['root']}")
    print(f"load with: OPFDataset({str(s['root'])!r}, case_name={s['case_name']!r}, "
          f"num_groups={s['num_groups']}, topological_perturbations={s['topological_perturbations']})")
    return 0


def _import(args: argparse.Namespace) -> int:
    from gridtune.grids.opfdata import import_opfdata
    from gridtune.grids.storage import read_manifest

    directory = import_opfdata(args.source, args.out, name=args.name)
    print(_format_info(directory, read_manifest(directory)))
    return 0


def _format_info(directory: Path, m: dict) -> str:
    c = m["counts"]
    t = m["solve_time_s"]
    lo, hi = m["load_scale_range"] or (float("nan"), float("nan"))
    base = m.get("baseline") or {}
    auroc = base.get("auroc")
    rated = m.get("ratings", {})
    lines = [
        f"dataset    {directory}",
        f"grid       {m['grid']['name']} ({m['grid']['buses']} buses, {m['grid']['branches']} branches)"
        + (f", re-rated x{rated['rating_factor']}" if rated.get("rerated") else ", stock ratings"),
        f"scenarios  {m['samples']}: feasible {c['feasible']}, infeasible {c['infeasible']}, "
        f"unknown {c['unknown']} ({100 * (m['unknown_share'] or 0):.1f}%), error {c['error']}",
        f"load scale {lo:.3f} .. {hi:.3f}",
        f"solve time mean {t['mean']:.3f} s, median {t['median']:.3f} s, p95 {t['p95']:.3f} s, "
        f"total {t['total']:.1f} s",
        "baseline   logistic regression on system totals: AUROC "
        + (f"{auroc:.3f}" if auroc is not None else f"undefined ({base.get('reason')})"),
        f"hash       content {m['content_hash']}, recipe {m['cache_key']}, schema v{m['schema_version']}",
    ]
    return "\n".join(lines)
