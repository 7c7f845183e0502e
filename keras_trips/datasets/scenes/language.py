"""Text from scene graphs: captions, VQA questions, referring expressions and
two-image statements, all true by construction."""

import itertools

from keras_trips.datasets.scenes import catalog
from keras_trips.datasets.scenes.layout import MAX_OBJECTS, relations

ANSWERS = (
    ["yes", "no"] + [str(n) for n in range(MAX_OBJECTS + 1)] + list(catalog.COLORS)
)
_OPPOSITE = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
_SINGLE_TEMPLATES = ("{x}", "a picture of {x}", "there is {x}")


def describe(obj):
    """The object's noun phrase: "red circle", "dog"."""
    return f"{obj['color']} {obj['category']}" if obj["color"] else obj["category"]


def with_article(phrase):
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def captions(scene, rng, focus_pair=None, count=3):
    """`count` captions naming one or two objects; the first names both
    categories of `focus_pair` when given."""
    objects = scene["objects"]
    texts = []
    if focus_pair is not None:
        first = next(o for o in objects if o["category"] == focus_pair[0])
        second = next(o for o in objects if o["category"] == focus_pair[1])
        texts.append(_pair_caption(first, second, rng))
    for _ in range(4 * count):
        if len(texts) == count:
            break
        if rng.random() < 0.6:
            i, j = rng.choice(len(objects), size=2, replace=False)
            text = _pair_caption(objects[i], objects[j], rng)
        else:
            obj = objects[int(rng.integers(len(objects)))]
            template = _SINGLE_TEMPLATES[int(rng.integers(len(_SINGLE_TEMPLATES)))]
            text = template.format(x=with_article(describe(obj)))
        # Distinct captions where the scene allows, repeats otherwise.
        if text not in texts or len(texts) + 1 == count:
            texts.append(text)
    return texts


def _pair_caption(a, b, rng):
    found = relations(a, b)
    relation = found[int(rng.integers(len(found)))] if found else "and"
    return f"{with_article(describe(a))} {relation} {with_article(describe(b))}"


def questions(scene, rng, categories):
    """VQA `(question, answer, question_type)` triples: count, existence,
    colour (when a shape is unique in the scene) and relation (when two
    objects are unique by description)."""
    objects = scene["objects"]
    present = sorted({o["category"] for o in objects})
    absent = sorted({c.name for c in categories} - set(present))
    plurals = {c.name: c.plural for c in categories}
    triples = []

    name = present[int(rng.integers(len(present)))]
    if absent and rng.random() < 0.15:
        name = absent[int(rng.integers(len(absent)))]
    count = sum(o["category"] == name for o in objects)
    triples.append((f"how many {plurals[name]} are there?", str(count), "count"))

    exists = not absent or rng.random() < 0.5
    pool = present if exists else absent
    name = pool[int(rng.integers(len(pool)))]
    triples.append(
        (f"is there {with_article(name)}?", "yes" if exists else "no", "existence")
    )

    unique_shapes = [
        o
        for o in objects
        if o["kind"] == "shape"
        and sum(p["category"] == o["category"] for p in objects) == 1
    ]
    if unique_shapes:
        obj = unique_shapes[int(rng.integers(len(unique_shapes)))]
        triples.append((f"what color is the {obj['category']}?", obj["color"], "color"))

    related = [
        (a, b, relation)
        for a, b in itertools.permutations(_unique_by_description(objects), 2)
        for relation in relations(a, b)
    ]
    if related:
        a, b, relation = related[int(rng.integers(len(related)))]
        answer = "yes"
        if rng.random() < 0.5:
            relation, answer = _OPPOSITE[relation], "no"
        triples.append(
            (f"is the {describe(a)} {relation} the {describe(b)}?", answer, "relation")
        )
    return triples


def _unique_by_description(objects):
    descriptions = [describe(o) for o in objects]
    return [
        o
        for o, d in zip(objects, descriptions, strict=True)
        if descriptions.count(d) == 1
    ]


def referring_expressions(scene):
    """`(text, object)` pairs for every object a phrase singles out: "the
    dog", or "the red circle on the left" when exactly two share the phrase
    and sit side by side."""
    objects = scene["objects"]
    expressions = [(f"the {describe(o)}", o) for o in _unique_by_description(objects)]
    descriptions = [describe(o) for o in objects]
    for description in sorted(set(descriptions)):
        twins = [
            o for o, d in zip(objects, descriptions, strict=True) if d == description
        ]
        side_by_side = len(twins) == 2 and {"left of", "right of"} & set(
            relations(twins[0], twins[1])
        )
        if side_by_side:
            left, right = sorted(twins, key=lambda o: o["box"][0])
            expressions.append((f"the {description} on the left", left))
            expressions.append((f"the {description} on the right", right))
    return expressions


def statements(scene_a, scene_b, rng, categories):
    """One true and one false statement `(sentence, label)` about a pair of
    scenes shown as the left and the right image."""
    names_a = [o["category"] for o in scene_a["objects"]]
    names_b = [o["category"] for o in scene_b["objects"]]
    plurals = {c.name: c.plural for c in categories}
    candidates = sorted(set(names_a) | set(names_b))
    unseen = sorted({c.name for c in categories} - set(candidates))
    if unseen:
        candidates.append(unseen[int(rng.integers(len(unseen)))])
    claims = []
    for name in candidates:
        in_a, in_b = name in names_a, name in names_b
        phrase = with_article(name)
        claims.append((f"the left image contains {phrase}", in_a))
        claims.append((f"the right image contains {phrase}", in_b))
        claims.append((f"both images contain {phrase}", in_a and in_b))
        total = names_a.count(name) + names_b.count(name)
        for claimed in (total, total + 1):
            if claimed == 0:
                continue
            if claimed >= 2:
                text = f"there are {claimed} {plurals[name]} in total"
            else:
                text = f"there is exactly one {name} in total"
            claims.append((text, claimed == total))
    chosen = []
    for label in (True, False):
        pool = [claim for claim in claims if claim[1] == label]
        chosen.append(pool[int(rng.integers(len(pool)))])
    return chosen
