"""The ground floor: plumbing every other package uses, each piece once.

``atomic`` (atomic writers), ``config`` (strict dataclass configs, TOML with ``extends``),
``checkpoints`` (torch files read as data and written atomically), ``device`` (device resolution),
``threads`` (the CPU thread policy and allocator setting), ``cli`` (the command-line conventions).
Nothing here imports another package of the toolkit.
"""
