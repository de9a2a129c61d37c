"""The API inside an app: load the models once, invert photos as they arrive, render on demand.

    python examples/app_service.py face1.jpg face2.png --out app_out/

``HeadService`` is what a photo app or a web handler would hold for its lifetime: inverting is
the slow part (seconds on a GPU, minutes on a CPU) and happens once per photo; every view after
that only runs the renderer on tri-planes computed once per result.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from eg3d_invert import InversionResult, Inverter
from eg3d_invert.errors import Eg3dInvertError


class HeadService:
    """Keeps one :class:`Inverter` and the results of the photos it has seen."""

    def __init__(self, network: str, **settings):
        self.inverter = Inverter.from_pretrained(network, **settings)  # generator, face models, LPIPS: once
        self.results: dict[str, InversionResult] = {}

    def add_photo(self, photo_id: str, data: bytes) -> dict:
        """Invert an uploaded photo (encoded bytes); returns what the app shows the user."""
        result = self.inverter.invert(data, name=photo_id)
        self.results[photo_id] = result
        return {"id": photo_id, "yaw": round(result.aligned.yaw, 1), "pitch": round(result.aligned.pitch, 1),
                "lpips": result.metrics["lpips"], "seconds": round(sum(result.timings.values()), 2)}

    def view_png(self, photo_id: str, yaw: float, pitch: float = 0.0) -> bytes:
        """A novel view as PNG bytes (degrees; yaw + toward the subject's left, pitch + from above)."""
        buffer = io.BytesIO()
        self.results[photo_id].render(yaw=yaw, pitch=pitch).save(buffer, format="PNG")
        return buffer.getvalue()

    def save(self, photo_id: str, folder: Path) -> None:
        """Persist a result; ``InversionResult.load(folder)`` brings it back after a restart."""
        self.results[photo_id].save(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", help="portrait photos, as an app would receive them")
    parser.add_argument("--out", default="app_out", help="where to write the rendered views")
    parser.add_argument("--network", default="ffhq512-128", help="registry name or checkpoint file")
    parser.add_argument("--steps", type=int, default=None, help="projection steps (default: official 500)")
    parser.add_argument("--pti-steps", type=int, default=None, help="tuning steps (default: official 350)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    service = HeadService(args.network, steps=args.steps, pti_steps=args.pti_steps)
    print(f"models loaded in {time.perf_counter() - t0:.1f} s")

    for k, path in enumerate(args.photos):
        photo_id = f"photo{k}"
        try:
            info = service.add_photo(photo_id, Path(path).read_bytes())
        except Eg3dInvertError as exc:  # no face, unreadable upload, ...: tell the user, keep serving
            print(f"{path}: rejected: {exc}")
            continue
        print(f"{path}: {info}")

    for photo_id in service.results:  # later requests: only rendering, no inversion
        for yaw in (-25, 0, 25):
            t0 = time.perf_counter()
            png = service.view_png(photo_id, yaw, pitch=5)
            (out / f"{photo_id}_yaw{yaw:+d}.png").write_bytes(png)
            print(f"{photo_id} yaw {yaw:+d}: {len(png)} bytes in {time.perf_counter() - t0:.2f} s")
        service.save(photo_id, out / photo_id)


if __name__ == "__main__":
    main()
