"""Mutation testing of the core modules with mutmut, module by module, within a time budget.

Why per module: mutmut 3 runs the selected tests once to learn which test reaches which function,
then runs each mutant against only those tests. Giving it, per module, only the test files that
are about that module keeps that first run short and each mutant to seconds on a 2-core CPU.

Each module gets its own scratch directory (a copy of src/ and of its test files, a `shared`
link to the real weights and images, and a pyproject.toml whose [tool.mutmut] section names the
module and its tests), so runs never touch the work tree and never mix caches. With `--max N`
a seeded random sample of N mutants is run (the score is then a sampled score, and says so);
`--budget` stops a module's run after that many seconds (mutants not reached count as unchecked).

    pip install -e .[mutation,test]
    python benchmarks/mutation.py                      # every module, 40 sampled mutants each
    python benchmarks/mutation.py --module ops/nms.py --max 0    # all mutants of one module
    python benchmarks/mutation.py --survivors          # also print the diff of each survivor
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# the tests about the restricted unpickler (every module split from it): the allow-list enumeration, the
# hostile payloads (test_security.py's command tests run a subprocess, the installed package rather than the
# mutant: left out), plain data and numpy arrays, zip/stream limits
UNPICKLER_TESTS = ["tests/test_security_names.py", "tests/test_unpickler_exact.py",
                   "tests/test_security.py::test_scaledyolo_load_refuses_and_runs_nothing",
                   "tests/test_security.py::test_disguised_payloads_inside_allowed_types_are_refused",
                   "tests/test_interop.py::test_restricted_unpickler_keeps_plain_data",
                   "tests/test_interop.py::test_truncated_official_files_give_one_clear_error",
                   "tests/test_hostile_files.py::test_numeric_numpy_arrays_still_load_as_arrays",
                   "tests/test_hostile_files.py::test_a_refused_file_does_not_change_the_next_load",
                   "tests/test_hostile_files.py::test_build_only_on_objects_of_this_load"]
OFFICIAL_TESTS = ["tests/test_official_structure.py",
                  "tests/test_interop.py::test_official_checkpoint_gives_the_official_outputs",
                  "tests/test_interop.py::test_official_file_of_unknown_structure",
                  "tests/test_hostile_files.py::test_official_files_with_odd_layer_keys_are_one_line"]
DARKNET_TESTS = [f"tests/test_interop.py::{name}" for name in (
    "test_parsed_cfg_is_the_generator_layer_for_layer", "test_reference_cfg_is_the_named_member",
    "test_darknet_weights_match_opencv_dnn", "test_darknet_round_trip_is_bit_exact",
    "test_old_weights_header_with_32bit_seen_count", "test_names_file_beside_the_cfg", "test_unknown_cfg_layer_type",
    "test_weights_of_the_wrong_length_say_expected_and_found_bytes",
    "test_weights_for_another_class_count_say_how_to_finetune", "test_random_bytes_as_weights")]
DECODE_TESTS = ["tests/test_loss_reference.py"] + [f"tests/test_models.py::{name}" for name in (
    "test_eval_output_is_decoded_raw_maps_in_level_anchor_y_x_order", "test_tiny_uses_darknet_decoding",
    "test_subnet_output_equals_full_output_restricted")]

# module (under src/scaledyolo) -> the test files (or node ids) about it
MODULES: dict[str, list[str]] = {
    "ops/boxes.py": ["tests/test_ops.py"],
    "ops/nms.py": ["tests/test_ops.py"],
    "train/loss.py": ["tests/test_loss_reference.py"],
    "eval/metrics.py": ["tests/test_eval.py", "tests/test_metrics_f1.py"],
    "data/augment.py": ["tests/test_augment.py", "tests/test_augment_draws.py", "tests/test_data.py"],
    "interop/unpickler.py": UNPICKLER_TESTS,
    "interop/unpickler_restricted.py": UNPICKLER_TESTS,
    "interop/unpickler_numpy.py": UNPICKLER_TESTS,
    "interop/unpickler_archive.py": UNPICKLER_TESTS,
    "interop/unpickler_standins.py": UNPICKLER_TESTS,
    "interop/darknet/layout.py": DARKNET_TESTS,
    "interop/darknet/weights.py": DARKNET_TESTS,
    "interop/official.py": OFFICIAL_TESTS,
    "models/yolo.py": DECODE_TESTS,
    "models/decode.py": DECODE_TESTS,
}
# only the mutants whose name holds this text are sampled (models/yolo.py: the Detect head's decode)
MUTANT_FILTER: dict[str, str] = {"models/yolo.py": "Detect"}
# what the tests import or read
SUPPORT = ["tests/conftest.py", "tests/official_standins.py", "tests/iou_reference.py", "tests/optional_components.py",
           "tests/fixtures"]
KILLED = {1, 3, 24, -24, 36, 152, 255}  # failed test, pytest error, timeout: the mutant was detected
SURVIVED = {0}


def mutmut_config(module: str, tests: list[str]) -> str:
    # forkserver: torch is not fork-safe after it has started threads
    return "\n".join([
        "[tool.mutmut]",
        'source_paths = ["src"]',
        f'only_mutate = ["src/scaledyolo/{module}"]',
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]',
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        "timeout_multiplier = 5.0",
        "",
    ])


def prepare(workdir: Path, module: str, tests: list[str]) -> None:
    """A fresh scratch copy holding the sources, the module's tests and a mutmut config."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "tests").mkdir(parents=True)
    shutil.copytree(ROOT / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for rel in {t.split("::")[0] for t in tests} | set(SUPPORT):
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, workdir / rel, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, workdir / rel)
    if SHARED.exists():
        (workdir / "shared").symlink_to(SHARED)  # tests find it at parents[2] of mutants/tests/x.py
    (workdir / "pyproject.toml").write_text(mutmut_config(module, tests))


def mutmut(workdir: Path, args: list[str], timeout: float | None) -> int:
    """Run `mutmut ARGS` in `workdir`; on timeout interrupt it (it saves what it has) and wait."""
    env = dict(os.environ, PYTHONPATH="", CI="")  # the copy's src, not an installed one
    cmd = [sys.executable, "-m", "mutmut", *args]
    with open(workdir / "mutmut.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                return proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait()


def results(workdir: Path, module: str) -> dict[str, int | None]:
    meta = workdir / "mutants" / "src" / "scaledyolo" / (module + ".meta")
    if not meta.exists():
        return {}
    return json.loads(meta.read_text())["exit_code_by_key"]


def run_module(workdir: Path, module: str, cap: int, budget: float, seed: int) -> dict:
    prepare(workdir, module, MODULES[module])
    start = time.monotonic()
    # 1. generate the mutants and learn which tests reach which function; the impossible name makes
    #    mutmut stop before running any mutant (the stats it collected are kept for step 2)
    mutmut(workdir, ["run", "--max-children", "1", "no-such-mutant-*"], timeout=budget)
    names = sorted(n for n in results(workdir, module) if MUTANT_FILTER.get(module, "") in n)
    if not names:
        return {"module": module, "error": f"no mutants generated, see {workdir / 'mutmut.log'}"}
    sample = sorted(random.Random(seed).sample(names, min(cap, len(names)))) if cap else names
    left = max(30.0, budget - (time.monotonic() - start))
    mutmut(workdir, ["run", "--max-children", "1", *sample], timeout=left)
    codes = results(workdir, module)
    picked = {n: codes.get(n) for n in sample}
    killed = [n for n, c in picked.items() if c in KILLED]
    survived = [n for n, c in picked.items() if c in SURVIVED]
    other = {n: c for n, c in picked.items() if c not in KILLED and c not in SURVIVED}
    checked = len(killed) + len(survived)
    return {"module": module, "mutants": len(names), "sampled": len(sample), "killed": len(killed),
            "survived": survived, "unchecked": other,
            "score": round(100.0 * len(killed) / checked, 1) if checked else None,
            "seconds": round(time.monotonic() - start)}


def show(workdir: Path, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=workdir, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=""))
    return out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="module(s) to test (default: all)")
    parser.add_argument("--max", type=int, default=40, help="mutants sampled per module (0: all)")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scaledyolo-mutation"))
    parser.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    args = parser.parse_args()
    summary = []
    for module in args.module or list(MODULES):
        workdir = args.workdir / module.replace("/", "_").removesuffix(".py")
        result = run_module(workdir, module, args.max, args.budget, args.seed)
        summary.append(result)
        print(json.dumps(result), flush=True)
        if args.survivors:
            for name in result.get("survived", []):
                print(show(workdir, name), flush=True)
    print("\nmodule | mutants | sampled | killed/checked | score")
    for r in summary:
        if "error" in r:
            print(f"{r['module']} | error: {r['error']}")
            continue
        checked = r["killed"] + len(r["survived"])
        print(f"{r['module']} | {r['mutants']} | {r['sampled']} | {r['killed']}/{checked} | {r['score']} %")


if __name__ == "__main__":
    main()
