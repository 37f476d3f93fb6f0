"""`scaledyolo train` and `scaledyolo demo`: a training run (`scaledyolo.train.trainer.train`), hyper-parameter
evolution (`--evolve N`, `scaledyolo.train.evolve.evolve`), or the synthetic end-to-end demo (`train.demo.demo`)."""

from __future__ import annotations

import argparse

from scaledyolo.commands.common import print_json
from scaledyolo.train.demo import demo
from scaledyolo.train.evolve import evolve
from scaledyolo.train.trainer import train


def run_train(args: argparse.Namespace) -> int:
    options = dict(model=args.model, data=args.data, img=args.img, epochs=args.epochs, batch=args.batch,
                   device=args.device, project=args.project, name=args.name, hyp=args.hyp, weights=args.weights,
                   resume=args.resume, workers=args.workers, multi_scale=args.multi_scale, freeze=args.freeze,
                   seed=args.seed, noautoanchor=args.noautoanchor, precision=args.precision, cache=args.cache,
                   val=not args.noval, close_mosaic=args.close_mosaic, patience=args.patience,
                   optimizer=args.optimizer, single_cls=args.single_cls, lr_schedule=args.lr_schedule,
                   save_period=args.save_period, exist_ok=args.exist_ok, deterministic=args.deterministic,
                   rect=args.rect)
    if args.evolve:
        options.pop("resume")
        evolve(args.evolve, **options)
    else:
        train(**options)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    summary = demo(project=args.project, name=args.name, device=args.device)
    if args.json:
        print_json(summary)
    return 0
