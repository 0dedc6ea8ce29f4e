"""Command line: `python -m kd_jax [study|sr|train|pipeline|sweep|list|import-torch|export-torch]`.

`python -m kd_jax` with no arguments runs the default study on the embedded digits data.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from kd_jax.errors import KDJaxError, Preempted

EPILOG = """commands:
  study (default)  teacher, CE student and KD student on the embedded digits data; prints a results table
  sr               SR teacher, L1 student and LSFD student on embedded photos; PSNR/SSIM table, picture
  train            one run from a Python config: --config FILE [--config.KEY=VALUE ...] --workdir DIR;
                   started once per host with --config.distributed.* for multi-process runs (docs/scaling.md)
  pipeline         a chain of runs (teacher, assistants, student) from a file defining get_pipeline():
                   --config FILE --workdir DIR [--config.KEY=VALUE ...] (overrides apply to every stage);
                   running it again skips finished stages and resumes the interrupted one
  sweep            every combination of --grid KEY=V1,V2,... (repeatable) over --seeds 0,1,2, from a config
                   file: --config FILE --workdir DIR [--config.KEY=VALUE ...] [--shard I/N]; finished runs
                   are skipped; writes results.md (mean ± std per cell, best chosen on validation) and plots
  list             registered models, distillers and datasets
  import-torch     a PyTorch checkpoint (torchvision / RepDistiller / mdistiller layout) as a kd_jax run that
                   config.teacher.workdir and kd_jax.load_model accept: FILE.pth|FILE.safetensors --model NAME
                   --workdir DIR [--dataset NAME] [--prefix P] (docs/models.md, "Teachers from PyTorch")
  export-torch     a finished run's network as a PyTorch state dict in the same layout:
                   --workdir DIR --output FILE.pth|FILE.safetensors

examples:
  python -m kd_jax
  python -m kd_jax sr --scale 4
  python -m kd_jax train --config experiments/digits_kd.py --config.loss.kd.temperature=2 --workdir runs/t2
  python -m kd_jax pipeline --config experiments/digits_dgkd.py --config.seed=1 --workdir runs/dgkd_s1
  python -m kd_jax sweep --config experiments/digits_kd.py --grid loss.kd.temperature=1,2,4 --seeds 0,1,2 \
      --workdir runs/kd_sweep
  python -m kd_jax import-torch ckpt_epoch_240.pth --model resnet32x4 --dataset cifar100 --workdir runs/t_res32x4
  python -m kd_jax export-torch --workdir runs/student --output student.safetensors
Config files are Python and are executed: only run configs you trust."""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m kd_jax", description="Knowledge distillation in JAX/Flax.",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command")
  study = sub.add_parser("study", help="run the default study (the default command)")
  study.add_argument("--workdir", help="run directory (default: runs/study-<time>-seed<seed>)")
  study.add_argument("--seed", type=int, default=0)
  study.add_argument("--quick", action="store_true", help="a few steps per run, for smoke tests")
  study.add_argument("--no-progress", action="store_true", help="hide progress bars")
  sr = sub.add_parser("sr", help="run the super-resolution study (teacher, L1 student, LSFD student)")
  sr.add_argument("--workdir", help="run directory (default: runs/sr-<time>-x<scale>-seed<seed>)")
  sr.add_argument("--seed", type=int, default=0)
  sr.add_argument("--scale", type=int, default=2, choices=(2, 3, 4), help="upscaling factor")
  sr.add_argument("--quick", action="store_true", help="a few steps per run, for smoke tests")
  sr.add_argument("--no-progress", action="store_true", help="hide progress bars")
  train = sub.add_parser("train", help="train one run from a config file",
                         description="Extra --config.KEY=VALUE arguments override config keys.")
  train.add_argument("--config", required=True, help="Python file defining get_config()")
  train.add_argument("--workdir", required=True, help="run directory; an existing run there is resumed")
  train.add_argument("--allow-config-change", action="store_true",
                     help="resume a run whose checkpoints were trained with a config that differs in what it "
                          "computes (otherwise refused, listing the differences)")
  pipeline = sub.add_parser("pipeline", help="run a chain of runs from a file defining get_pipeline()",
                            description="Extra --config.KEY=VALUE arguments override config keys of every stage.")
  pipeline.add_argument("--config", required=True, help="Python file defining get_pipeline()")
  pipeline.add_argument("--workdir", required=True, help="pipeline directory, one run directory per stage; "
                                                         "finished stages are skipped, an interrupted one resumed")
  pipeline.add_argument("--no-progress", action="store_true", help="hide progress bars")
  sweep = sub.add_parser("sweep", help="run every combination of config values over seeds; one table",
                         description="Extra --config.KEY=VALUE arguments override config keys of every run.")
  sweep.add_argument("--config", required=True, help="Python file defining get_config()")
  sweep.add_argument("--workdir", required=True, help="sweep directory, one run directory per combination and "
                                                      "seed; finished runs are skipped, interrupted ones resumed")
  sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                     help="values of one config key (repeat for a Cartesian product)")
  sweep.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the config's seed)")
  sweep.add_argument("--shard", default="0/1", metavar="I/N",
                     help="run only the combinations whose index is I modulo N (job arrays, several hosts)")
  sweep.add_argument("--no-progress", action="store_true", help="hide progress bars")
  sub.add_parser("list", help="list models, distillers and datasets")
  imp = sub.add_parser("import-torch", help="convert a PyTorch checkpoint into a kd_jax run (a teacher)",
                       description="Writes <workdir>/model.json and <workdir>/model/, what a finished run exports.")
  imp.add_argument("checkpoint", help="state dict file: .safetensors (read without PyTorch) or a torch.save file "
                                      "(.pth, .pt, ...; {'model': state_dict} wrappers and 'module.' prefixes are "
                                      "handled)")
  imp.add_argument("--model", required=True, help="registered model whose PyTorch layout the file has, e.g. "
                                                  "resnet32x4, wrn_40_2, imagenet_resnet50")
  imp.add_argument("--workdir", required=True, help="run directory to create (must not exist, or be empty)")
  imp.add_argument("--dataset", default="", help="the data the network was trained on, recorded in model.json; "
                                                 "one kd_jax knows (cifar100, ...) must have the class count")
  imp.add_argument("--prefix", default=None, help="keep only keys starting with this, without it (e.g. 'student.' "
                                                  "for a whole mdistiller distiller)")
  exp = sub.add_parser("export-torch", help="write a finished run's network as a PyTorch state dict")
  exp.add_argument("--workdir", required=True, help="a finished run (or <workdir>/networks/<name>)")
  exp.add_argument("--output", required=True, help="file to write: .safetensors (no PyTorch needed) or a "
                                                   "torch.save file (.pth)")
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0].startswith("--") and argv[0] not in ("--help", "-h"):
    argv = ["study", *argv]
  args, extra = _parser().parse_known_args(argv)
  overrides = [a[len("--config."):] for a in extra if a.startswith("--config.")]
  unknown = [a for a in extra if not a.startswith("--config.")]
  if unknown or (overrides and args.command not in ("train", "pipeline", "sweep")):
    _parser().error(f"unrecognized arguments: {' '.join(unknown or extra)}")
  try:
    if args.command == "list":
      from kd_jax import data, distillers, models
      print("models:     ", ", ".join(models.model_names()))
      print("distillers: ", ", ".join(distillers.distiller_names()))
      print("datasets:   ", ", ".join(data.dataset_names() + list(data.SR_DATASETS) + list(data.REGRESSION_DATASETS)))
    elif args.command == "train":
      from kd_jax.config import apply_overrides, load_config_file
      from kd_jax.train import distributed
      config = apply_overrides(load_config_file(args.config), overrides)
      # Before anything touches a JAX backend (docs/scaling.md): a multi-process run starts here.
      distributed.initialize(config)
      from kd_jax.train.loop import train_and_evaluate
      results = train_and_evaluate(config, args.workdir, allow_config_change=args.allow_config_change)
      if distributed.is_main_process():
        print("\n" + results["table"] + "\n")
        print(f"Run directory: {results['workdir']} (results.md, results.json, metrics, checkpoints)")
    elif args.command == "pipeline":
      from kd_jax.train.pipeline import load_pipeline_file, run_pipeline
      out = run_pipeline(load_pipeline_file(args.config), args.workdir, overrides=overrides,
                         progress_bar=False if args.no_progress else None)
      print("\n" + out["table"] + "\n")
      print(f"Pipeline directory: {out['workdir']} (results.md, results.json, one run directory per stage)")
      for stage, why in out["failed"].items():
        print(f"error: stage {stage!r} {why}", file=sys.stderr)
      return 2 if out["failed"] else 0
    elif args.command == "sweep":
      from kd_jax.config import load_config_file
      from kd_jax.train import sweep
      seeds = sweep.parse_seeds(args.seeds) if args.seeds is not None else None
      out = sweep.run_sweep(load_config_file(args.config), args.workdir, args.grid, seeds=seeds,
                            overrides=overrides, shard=sweep.parse_shard(args.shard),
                            progress_bar=False if args.no_progress else None)
      print("\n" + out["table"] + "\n")
      print(f"Sweep directory: {out['workdir']} (results.md, results.json, sweep_<key>.png, one run directory "
            "per combination and seed)")
      for path, why in out["failed"].items():
        print(f"error: run {path} failed: {why}", file=sys.stderr)
      return 2 if out["failed"] else 0
    elif args.command == "import-torch":
      from kd_jax import torch_io
      info = torch_io.import_torch(args.checkpoint, args.model, args.workdir, dataset=args.dataset,
                                   prefix=args.prefix)
      print(torch_io.describe_import(info, args.workdir))
    elif args.command == "export-torch":
      from kd_jax import torch_io
      info = torch_io.export_torch(args.workdir, args.output)
      print(f"Wrote the {info['model']!r} network of {args.workdir} to {args.output} "
            f"({torch_io.torch_layout(info['model']).source} state dict).")
    elif args.command == "sr":
      from kd_jax.sr_study import run_sr_study
      out = run_sr_study(args.workdir, seed=args.seed, scale=args.scale, quick=args.quick,
                         progress_bar=not args.no_progress)
      print("\n" + out["table"] + "\n")
      print(f"Run directory: {out['workdir']} (results.md, results.json, comparison.png, one folder per run)")
    else:
      from kd_jax.study import run_study
      out = run_study(args.workdir, seed=args.seed, quick=args.quick, progress_bar=not args.no_progress)
      print("\n" + out["table"] + "\n")
      print(f"Run directory: {out['workdir']} (results.md, results.json, metrics, checkpoints)")
  except KDJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Preempted as e:
    print(f"[kd_jax] {e}", flush=True)
    return 0
  return 0
