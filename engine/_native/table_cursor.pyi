from typing import Any

from engine._native.cursor import Cursor

class TableCursor(Cursor):
    def __init__(self, reader: Any) -> None: ...

class LevelCursor(Cursor):
    def __init__(self, readers: list[Any], largest: list[bytes]) -> None: ...
