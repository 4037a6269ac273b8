"""Parameters CI passes to lesson notebooks (their `parameters` cell holds the defaults).

Keep CI sizes big enough that every measured claim the notebook asserts still holds."""

CI_PARAMETERS: dict[str, dict] = {
    "00-start-here.ipynb": {},
}
