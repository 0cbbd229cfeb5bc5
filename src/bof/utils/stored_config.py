"""What a checkpoint stores of its run's config beside the resolved one, and how bof-eval, bof-predict
and bof-export apply their ``key=value`` overrides to it: resolved again afterwards, so an override
reaches every key that interpolates it, and a key the config lacks is an error, as in bof-train."""

from __future__ import annotations

import difflib
import re

from omegaconf import DictConfig, OmegaConf

# ${data.root}, ${..root}: an interpolation of the config's own keys, which resolves the same anywhere;
# any other (${hydra:...}, ${oc.env:...}, bof's resolvers) needs the process that composed the config
OWN_KEY_REFERENCE = re.compile(r"\$\{[\w.\[\]-]*\}")


def portable_config(cfg: DictConfig) -> dict:
    """The unresolved config as a plain container that resolves outside Hydra: interpolations of the
    config's own keys are kept, every other one is replaced by its value now. A checkpoint stores it so
    that bof-eval's overrides reach what they name (``data.root=...`` re-resolves ``data.val.root``),
    and the processes of a ``trainer.devices=N`` job get it (Hydra's values fixed in the parent)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)

    def keep(raw, value):
        if isinstance(raw, dict) and isinstance(value, dict):
            return {k: keep(v, value[k]) for k, v in raw.items()}
        if isinstance(raw, list) and isinstance(value, list):
            return [keep(r, v) for r, v in zip(raw, value, strict=True)]
        if isinstance(raw, str) and "${" in OWN_KEY_REFERENCE.sub("", raw):
            return value
        return raw

    return keep(OmegaConf.to_container(cfg, resolve=False), resolved)


def config_keys(node, key: str = "") -> list[str]:
    """Every dotted key of a plain config container, inner nodes included."""
    if not isinstance(node, dict):
        return []
    keys = []
    for name, value in node.items():
        full = f"{key}.{name}" if key else str(name)
        keys += [full, *config_keys(value, full)]
    return keys


def with_overrides(config: dict, overrides: list[str], source: str) -> DictConfig:
    """``config`` (a stored one) with ``key=value`` ``overrides`` merged in. A key the config does not have
    is an error naming it and the nearest keys, as bof-train's (a typo would be silently ignored);
    ``+key=value`` adds one deliberately."""
    keys, dotlist = set(config_keys(config)), []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.startswith("+"):
            key = key.lstrip("+")
        elif key not in keys:
            near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            raise ValueError(
                f"{source}: could not override {key!r}: its stored config has no such key"
                f"{' (nearest: ' + ', '.join(near) + ')' if near else ''}. To add one, use +{key}={value}"
            )
        dotlist.append(f"{key}={value}")
    return OmegaConf.merge(OmegaConf.create(config), OmegaConf.from_dotlist(dotlist))
