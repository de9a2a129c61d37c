"""One portrait photo -> novel views, depth, an orbit video and a coloured 3D mesh.

    python examples/single_photo.py portrait.jpg --out my_head/

The first run downloads the ffhq512-128 checkpoint (~378 MB) into the cache. On a CPU the
official schedule (500 + 350 steps) takes a long while; ``--steps 100 --pti-steps 100`` gives a
rougher result much sooner.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from eg3d_invert import Inverter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", help="a portrait photo (jpg, png, webp, ...)")
    parser.add_argument("--out", default="single_photo_out", help="output folder")
    parser.add_argument("--network", default="ffhq512-128", help="registry name or checkpoint file")
    parser.add_argument("--steps", type=int, default=None, help="projection steps (default: official 500)")
    parser.add_argument("--pti-steps", type=int, default=None, help="tuning steps (default: official 350)")
    parser.add_argument("--frames", type=int, default=120, help="frames of the orbit video")
    parser.add_argument("--mesh-res", type=int, default=256, help="marching-cubes resolution")
    parser.add_argument("--mesh-level", type=float, default=10.0, help="density iso-level (official 10)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    inverter = Inverter.from_pretrained(args.network, steps=args.steps, pti_steps=args.pti_steps)

    def progress(p):  # called after every optimisation step
        if p.stage in ("project", "tune") and p.step and (p.step == p.total or p.step % 50 == 0):
            print(f"  {p.stage} {p.step}/{p.total}  loss {p.loss:.4f}")

    t0 = time.perf_counter()
    result = inverter.invert(args.photo, callback=progress)
    print(f"inverted {args.photo} in {time.perf_counter() - t0:.1f} s: yaw {result.aligned.yaw:+.1f}, "
          f"pitch {result.aligned.pitch:+.1f}, LPIPS {result.metrics['lpips']:.3f}")

    # Angles are degrees: yaw + turns the camera toward the subject's left, pitch + looks from above.
    result.views([-30, -15, 0, 15, 30]).save(out / "views.png")
    result.render(yaw=25, pitch=10).save(out / "left_from_above.png")
    result.video(out / "orbit.mp4", frames=args.frames)
    mesh = result.mesh(resolution=args.mesh_res, level=args.mesh_level)  # a trimesh.Trimesh, world units
    mesh.export(out / "head.glb")                                         # vertex colours included
    result.save(out / "result")  # reload later with InversionResult.load(out / "result")
    print(f"wrote views.png, left_from_above.png, orbit.mp4, head.glb ({len(mesh.vertices)} vertices) "
          f"and result/ to {out}")


if __name__ == "__main__":
    main()
