"""Render the gateway's XML answers and its few HTML error pages.

The answer is one `<xml name="ACTION" result="CODE">` element whose `<Item/>` children
carry every datum as an attribute. Attribute values are escaped by hand with one
`str.translate` table (the hot path renders one answer per request, and an XML library
would cost more than the rest of the request): `& < > "` become entities, and newline,
carriage return and tab become character references, because an XML parser normalises
raw whitespace in attributes to spaces and a reply's line breaks would be lost.
Characters XML 1.0 cannot carry at all (C0 controls) become U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "XML_CONTENT_TYPE",
    "escape_attr",
    "html_page",
    "render_response",
]

XML_CONTENT_TYPE = b"text/xml; charset=utf-8"

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

_ESCAPES: dict[int, str] = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    ord("\n"): "&#10;",
    ord("\r"): "&#13;",
    ord("\t"): "&#9;",
}
for _code in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF):
    _ESCAPES[_code] = "\ufffd"
del _code


def escape_attr(value: str) -> str:
    """Escape `value` for a double-quoted XML attribute, keeping line breaks."""
    return value.translate(_ESCAPES)


def render_response(name: str, result: int, items: Iterable[Mapping[str, str]] = ()) -> bytes:
    """The complete UTF-8 answer body for one request."""
    head = f'<xml name="{escape_attr(name)}" result="{result}"'
    parts = [
        "<Item " + " ".join(f'{key}="{escape_attr(value)}"' for key, value in item.items()) + "/>"
        for item in items
    ]
    if not parts:
        return (_DECLARATION + head + "/>").encode()
    # "replace": a lone surrogate injected from code must not crash the answer.
    return (_DECLARATION + head + ">" + "".join(parts) + "</xml>").encode("utf-8", "replace")


def html_page(status: int, reason: str) -> bytes:
    """A small HTML error page, like a servlet container or a proxy would send."""
    title = f"{status} {reason}"
    return (
        f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>\n"
    ).encode()
