from typing import Any

from engine._native.cursor import Cursor

class TableCursor(Cursor):
    def __init__(self, reader: Any, fill_cache: bool = True) -> None: ...

class LevelCursor(Cursor):
    def __init__(self, readers: list[Any], largest: list[bytes], fill_cache: bool = True) -> None: ...
