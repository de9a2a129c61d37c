"""A folder of portraits in batch: one result folder per photo, bad photos reported, resumable.

    python examples/batch_folder.py portraits/ --out heads/

This is what ``eg3d-invert portraits/ --out heads/`` does, written out with the library so it
can be adapted: pick the renders, handle each outcome, run it again to resume after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

from eg3d_invert import Inverter
from eg3d_invert.batch import collect_inputs, run_batch, summary, write_summary
from eg3d_invert.options import RenderOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="folder of portrait photos (searched recursively)")
    parser.add_argument("--out", default="batch_out", help="output folder")
    parser.add_argument("--network", default="ffhq512-128", help="registry name or checkpoint file")
    parser.add_argument("--steps", type=int, default=None, help="projection steps (default: official 500)")
    parser.add_argument("--pti-steps", type=int, default=None, help="tuning steps (default: official 350)")
    parser.add_argument("--frames", type=int, default=120, help="frames of each orbit video")
    parser.add_argument("--mesh-res", type=int, default=256, help="marching-cubes resolution")
    parser.add_argument("--mesh-level", type=float, default=10.0, help="density iso-level (official 10)")
    args = parser.parse_args(argv)

    photos = collect_inputs([args.folder], args.out)
    print(f"{len(photos)} photos in {args.folder}")
    inverter = Inverter.from_pretrained(args.network, steps=args.steps, pti_steps=args.pti_steps)
    options = RenderOptions(yaws=(-30, 0, 30), pitches=(0, 0, 0), frames=args.frames, mesh_formats=("glb",),
                            mesh_resolution=args.mesh_res, mesh_level=args.mesh_level)

    outcomes = []
    for outcome in run_batch(inverter, photos, args.out, options, resume=True):
        outcomes.append(outcome)
        if outcome.ok:
            lpips = (outcome.report or {}).get("metrics", {}).get("lpips")
            print(f"  {outcome.action:9s} {outcome.source} -> {outcome.directory} (LPIPS {lpips})")
        else:
            print(f"  failed    {outcome.error}")
    write_summary(args.out, summary(outcomes, out=args.out))
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed} done, {failed} failed; see {args.out}/summary.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
