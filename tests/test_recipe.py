"""Recipes: defaults, hashing, validation with field names, YAML round trip."""

import pytest

from autodata.errors import RecipeError
from autodata.recipe import Recipe, load_recipe


def test_hash_is_stable_and_changes_with_content():
    assert Recipe().content_hash == Recipe().content_hash
    changed = Recipe().with_changes(max_rounds=2)
    assert changed.max_rounds == 2 and changed.content_hash != Recipe().content_hash
    assert len(Recipe().content_hash) == 16
    # The shipped default's hash: a strategy added later, weighted 0, must not change it (run
    # folders, LLM caches and studies are keyed by it).
    assert Recipe().content_hash == "2ace030fbd440e88"


def test_with_changes_validates():
    with pytest.raises(RecipeError, match=r"search.top_k: Input should be less than or equal to 50"):
        Recipe().with_changes(search={"top_k": 999})
    with pytest.raises(RecipeError, match="strategies: Value error, at least one strategy weight must be positive"):
        Recipe().with_changes(strategies={"keep": 0, "rephrase": 0, "multi_hop": 0})


def test_yaml_round_trip_and_partial_files(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(Recipe().to_yaml())
    assert load_recipe(path) == Recipe()
    path.write_text("max_rounds: 2\nacceptance:\n  attempts_per_solver: 5\n")
    recipe = load_recipe(path)
    assert recipe.max_rounds == 2 and recipe.acceptance.attempts_per_solver == 5 and recipe.search.top_k == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_round: 2\n", "max_round: Extra inputs are not permitted"),
        ("hint_mode: maybe\n", "hint_mode: Input should be 'none', 'titles' or 'answer'"),
        ("acceptance:\n  weak_max_accuracy: 0\n", "acceptance.weak_max_accuracy: Input should be greater than 0"),
        ("- a list\n", "the top level must be a mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_recipes_name_the_field_and_reason(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


def test_missing_file():
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("nope.yaml")
