"""A tiny case9 recipe for tests that need a real, solver-labelled dataset in seconds."""

from tests.templates import recipe_toml


def recipe_file(tmp_path, samples=12, scale='[0.9, 2.2]', name="r.toml"):
    p = tmp_path / name
    p.write_text(recipe_toml(samples, scale=scale, dc=True))
    return p
