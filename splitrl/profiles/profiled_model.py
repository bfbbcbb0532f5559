"""The model and the samples a profile was built from, found again from its metadata.

A profile built with ``splitrl profile build --card`` or ``--model`` records the card (or the
factory), the data source and the SHA-256 of the model's weights (``state_sha256``). Live mode
and the export load that model again and refuse one whose weights differ, so that live outcomes
and exported segments are those of the profiled network::

    model = load_profiled_model(profile)          # the card's network, or the shipped one
    samples = open_profiled_samples(profile)      # the image folder or NPZ file, same order
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitrl.models.protocol import SampleSource, StagedModel
from splitrl.profiles.samples import open_samples
from splitrl.profiles.schema import Profile, ProfileError


def names_own_model(profile: Profile) -> bool:
    """Whether the profile was built from a model card or a factory (not the shipped network)."""
    model = profile.metadata.get("model", {})
    return isinstance(model, dict) and ("card" in model or "factory" in model)


def load_profiled_model(profile: Profile, reference: str | Path | None = None) -> StagedModel:
    """The model ``profile`` was built from, its weights checked against the profile's record.

    :param profile: the profile
    :param reference: where the model is, when not where the profile says: a model card
        (``.yaml``/``.yml``), a checkpoint sidecar of the shipped architecture (``.json``),
        ``MODULE:FUNCTION`` returning a staged model, or ``"default"`` (the shipped network);
        ``None``: the card or factory the profile names, else the shipped network
    :raises ProfileError: when the model cannot be found or its weights are not the profiled ones
    """
    recorded: dict[str, Any] = profile.metadata.get("model", {})
    if reference is None:
        reference = recorded.get("card") or recorded.get("factory") or "default"
    try:
        model = load_staged_model(reference)
    except (ValueError, OSError) as error:
        raise ProfileError(
            f"profile {profile.name!r}: cannot load its model {reference} ({error}); "
            "pass the model card or factory explicitly"
        ) from error
    check_profiled_model(profile, model)
    return model


def load_staged_model(reference: str | Path) -> StagedModel:
    """A staged model from a card, a checkpoint sidecar, a factory, or ``"default"``.

    :param reference: see :func:`load_profiled_model`
    """
    from splitrl.models.card import load_model_card, resolve_factory, staged_model_from_card
    from splitrl.models.checkpoint import load_checkpoint, load_default_model

    text = str(reference)
    if text == "default":
        return load_default_model()
    if text.endswith((".yaml", ".yml")):
        return staged_model_from_card(load_model_card(text))
    if text.endswith(".json"):
        return load_checkpoint(text)
    model = resolve_factory(text)()
    if not isinstance(model, StagedModel):
        raise ValueError(f"{text}: the function must return a StagedModel")
    return model


def check_profiled_model(profile: Profile, model: StagedModel) -> None:
    """Refuse a model whose weights are not those the profile was built from.

    :raises ProfileError: when the profile records ``state_sha256`` and the model's differs
    """
    from splitrl.models.card import state_sha256

    recorded = profile.metadata.get("model", {}).get("state_sha256")
    if recorded is None:
        return
    actual = state_sha256(model)
    if actual != recorded:
        raise ProfileError(
            f"profile {profile.name!r} was built from a model with weights {recorded[:12]}..., "
            f"this one has {actual[:12]}...: its outcomes would not be the profiled ones"
        )


def open_profiled_samples(profile: Profile) -> SampleSource:
    """The test samples of a profile built from ``--data``, in the order it measured them.

    :raises ProfileError: when the profile names no data source, or the samples changed
    """
    dataset: dict[str, Any] = profile.metadata.get("dataset", {})
    if "source" not in dataset:
        raise ProfileError(f"profile {profile.name!r} names no data source (--data)")
    try:
        samples = open_samples(dataset["source"], profile.input_shape, limit=profile.n_samples)
    except ValueError as error:
        raise ProfileError(f"profile {profile.name!r}: {error}") from error
    recorded = dataset.get("fingerprint")
    if recorded is not None and samples.fingerprint() != recorded:
        raise ProfileError(
            f"profile {profile.name!r}: the samples in {dataset['source']} changed since the build"
        )
    return samples
