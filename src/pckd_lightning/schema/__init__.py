"""What a run config may say, declared once: pydantic v2 models, one per option group.

Why pydantic and not Hydra's structured configs: the loss terms are a mapping of any names
(``distill.terms.<name>``) whose entries share a few options (weight, temperature, warm-up) beside each
term's own, which ``dict[str, TermOptions]`` with ``extra="ignore"`` states directly, while a structured
config would have to list every term or give up on checking them; strict pydantic types refuse a bool
where an int belongs and a string where a number does, and their errors carry the key path, so one pass
reports every bad value. The same field types (:mod:`~pckd_lightning.schema.fields`) check the arguments
of the library's own classes, so a value is refused in the same words whichever way it arrives.

- :mod:`~pckd_lightning.schema.fields`: the constrained field types and the words of a refusal;
- :mod:`~pckd_lightning.schema.groups`: one model per option group, assembled in ``RunConfig``;
- :mod:`~pckd_lightning.schema.config`: :func:`validate` and ``docs/config-checks.md``'s table.

Nothing is imported here: the field types are imported by modules that the groups import in turn.
"""
