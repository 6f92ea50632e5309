"""A tiny case9 recipe for tests that need a real, solver-labelled dataset in seconds."""

RECIPE = """
case = "case9"
samples = {samples}
seed = 5
[loads]
scale = {scale}
noise = 0.05
[topology]
n_minus_1 = 0.5
candidates = 3
[labels]
solutions = true
dc = true
"""


def recipe_file(tmp_path, samples=12, scale='[0.9, 2.2]', name="r.toml"):
    p = tmp_path / name
    p.write_text(RECIPE.format(samples=samples, scale=scale))
    return p
