"""What a learner reads: tables with integers as integers, no NaN where a value does not
apply, SQL in full and left-aligned; computed sentences that wrap between words; widget
controls that show their result at once, follow a change, and label themselves in full."""

from __future__ import annotations

import pandas as pd

from labkit import controls, measure

LONG_SQL = "SELECT users.id, users.name, count(posts.id) AS post_count FROM users " * 3


def test_table_formats_numbers_and_missing_values():
    frame = pd.DataFrame(
        {"sql": [LONG_SQL, "SELECT 1"], "buffers": [4690.0, 52.0], "hit rate (%)": [None, 82.61]},
        index=pd.Index(["no cache", "warmed"], name="run"),
    )
    shown = measure.table(frame)
    html = shown._repr_html_()
    assert "4,690" in html and "4690.000" not in html and "NaN" not in html
    assert measure.NOT_APPLICABLE in html and "82.61" in html
    assert LONG_SQL.strip() in html.replace("&#x27;", "'"), "SQL cut short"
    sql_cell = html.split("<td", 1)[1]
    assert "text-align:left" in sql_cell and "white-space:pre-wrap" in sql_cell
    text = repr(shown)
    assert "NaN" not in text and "4,690" in text and "..." not in text
    assert shown.frame is frame


def test_say_prints_outside_a_notebook(capsys):
    measure.say("a sentence with ix_posts_author_id", "and another")
    assert capsys.readouterr().out == "a sentence with ix_posts_author_id\n\nand another\n"
    assert measure.Sentence("a_b *c* `d_e`")._repr_markdown_() == "a\\_b \\*c\\* `d_e`"


def test_live_controls_follow_a_change_and_fit_their_labels():
    import ipywidgets as widgets

    warm = widgets.IntSlider(value=20, min=0, max=50, description="warmed (%)")
    box = controls.live(lambda skew, warm_percent: f"{skew} / {warm_percent}%",
                        skew=widgets.FloatSlider(value=1.2), warm_percent=warm)  # fmt: skip
    shown = box.children[-1]
    assert "1.2 / 20%" in shown.value
    warm.value = 35
    assert "1.2 / 35%" in shown.value
    assert box.children[0].description == "skew"
    assert all(c.style.description_width == "initial" for c in box.children[:-1])
    failing = controls.live(lambda x: 1 / x, x=widgets.IntSlider(value=0))
    assert "ZeroDivisionError" in failing.children[-1].value
