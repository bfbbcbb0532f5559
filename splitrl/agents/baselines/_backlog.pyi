def relative_values(
    now: object,
    below: object,
    weight: object,
    points: int,
    actions: int,
    horizon: int,
    tolerance: float,
    value: object,
) -> int: ...
def undominated(criteria: object, count: int, actions: int, keep: object) -> int: ...
