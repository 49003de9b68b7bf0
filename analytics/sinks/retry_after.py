"""``Retry-After`` and HTTP dates, parsed without the ``email`` package.

Pure functions with an injected ``now``. They run in the uploader thread, so they import nothing
lazily: a thread that imports while the app forks leaves the child waiting on the import lock
forever (``email.utils`` would also cost 12 ms at import).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Final

# A server may ask for any pause; we honour it up to this, so a typo'd header cannot park delivery for
# days (events are kept on disk meanwhile, and their age bound still applies).
MAX_RETRY_AFTER_SECONDS: Final = 3600.0

_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
# RFC 9110 5.6.7: IMF-fixdate, the obsolete RFC 850 form, and asctime().
_IMF_FIXDATE: Final = re.compile(r"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_RFC850: Final = re.compile(r"^[A-Za-z]+, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$")
_ASCTIME: Final = re.compile(r"^[A-Za-z]{3} ([A-Za-z]{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$")


def parse_http_date(text: str) -> float | None:
    """Seconds since the epoch of an HTTP date, or None when it is not one.

    >>> parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT")
    784111777.0
    """
    text = text.strip()
    if match := _IMF_FIXDATE.match(text):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.match(text):
        day, month, short_year, hour, minute, second = match.groups()
        year = str(1900 + int(short_year) if int(short_year) >= 70 else 2000 + int(short_year))
    elif match := _ASCTIME.match(text):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    number = _MONTHS.get(month.lower())
    if number is None:
        return None
    try:
        when = datetime(int(year), number, int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except ValueError:
        return None
    return when.timestamp()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        when = parse_http_date(text)
        if when is None:
            return None
        seconds = when - now
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER_SECONDS))
