"""The edit request: one fact to rewrite, with the prompts its evaluation uses."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from bluebook.model.tokens import check_template, subject_in_prompt

__all__ = ["EditRequest"]


@dataclass(frozen=True)
class EditRequest:
    """One fact to rewrite: ``prompt.format(subject)`` should continue with ``target_new``.

    ``prompt`` is a template with exactly one ``{}`` for the subject. ``target_new`` and
    ``target_true`` are stored without the leading space; the engine prepends one (as every
    reference implementation does) via :attr:`new_text`.
    ``paraphrase_prompts``, ``neighborhood_prompts``, ``generation_prompts`` are filled prompts.
    For zsRE, ``neighborhood_prompts`` holds the one ``loc`` question and
    ``neighborhood_answer`` its answer; ``target_true`` is the reference's dummy ``"<|endoftext|>"``.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    case_id: int | str | None = None
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    attribute_prompts: tuple[str, ...] = ()
    relation_id: str | None = None
    target_new_id: str | None = None
    target_true_id: str | None = None
    neighborhood_answer: str | None = None
    dataset: str = "custom"

    def __post_init__(self):
        where = f" (case_id={self.case_id})" if self.case_id is not None else ""
        check_template(self.prompt, field=f"prompt{where}")
        if not isinstance(self.subject, str) or not self.subject.strip():
            raise ValueError(f"subject{where} must be a non-empty string, got {self.subject!r}")
        if not isinstance(self.target_new, str) or not self.target_new.strip():
            raise ValueError(f"target_new{where} must be a non-empty string, got {self.target_new!r}")
        if self.target_true is not None and self.target_true.strip() == self.target_new.strip():
            raise ValueError(f"target_new{where} {self.target_new!r} is identical to target_true")
        for name in ("paraphrase_prompts", "neighborhood_prompts", "generation_prompts", "attribute_prompts"):
            v = getattr(self, name)
            if isinstance(v, str):
                raise TypeError(f"{name}{where} must be a sequence of strings, not a single string")
            object.__setattr__(self, name, tuple(v))
        object.__setattr__(self, "target_new", self.target_new.lstrip(" "))
        if self.target_true is not None:
            object.__setattr__(self, "target_true", self.target_true.lstrip(" "))

    @classmethod
    def from_prompt(cls, prompt: str, subject: str, target_new: str, target_true: str | None = None,
                    **kw) -> "EditRequest":
        """Build a request from a template with ``{}`` or from a filled prompt containing the subject."""
        template = prompt if "{}" in prompt else subject_in_prompt(prompt, subject)
        return cls(prompt=template, subject=subject, target_new=target_new, target_true=target_true, **kw)

    @property
    def text(self) -> str:
        """The filled rewrite prompt."""
        return self.prompt.replace("{}", self.subject)

    @property
    def new_text(self) -> str:
        """``target_new`` with the leading space the engine uses."""
        return " " + self.target_new

    @property
    def true_text(self) -> str | None:
        return None if self.target_true is None else " " + self.target_true

    def to_dict(self) -> dict:
        return asdict(self)
