"""Registers this part's hooks into other apps (gallery lineage, ...). Filled by its owner."""


def register() -> None:
    pass
