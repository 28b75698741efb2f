"""The bundled sample is generated: regenerating it gives resources/sample/ byte for byte."""

from __future__ import annotations

from conftest import REPO

from molorec.sample import generate_sample

SAMPLE = REPO / "resources/sample"


def files_under(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_regenerating_the_sample_gives_the_bundled_files_byte_for_byte(tmp_path):
    written = generate_sample(tmp_path / "sample")
    assert {str(p.relative_to(tmp_path / "sample")) for p in written} == set(files_under(SAMPLE))
    regenerated = files_under(tmp_path / "sample")
    bundled = files_under(SAMPLE)
    assert regenerated.keys() == bundled.keys()
    changed = [name for name in bundled if regenerated[name] != bundled[name]]
    assert not changed, f"regenerated files differ from resources/sample/: {changed}"
