"""Yelp Open Dataset: ``yelp_academic_dataset_business.json`` and ``..._review.json``
(JSON lines, .gz read as is)::

    {"business_id": "Pns2l4eNsfO8kk83dixA6A", "name": "Abby Rappoport, LAC", "categories": "Doctors, Health & Medical", ...}
    {"review_id": "...", "user_id": "mh_-eMZ6K5RLWhZyISBhwA", "business_id": "XQfwVwDr-v0ZS3_CbbE5Xw", "stars": 3.0, "date": "2018-07-07 22:09:11", ...}

Items get ``title`` (the business name) and ``categories`` (the ", "-separated string as
published; a list, as in some older releases, is ", "-joined). ``date`` is read as UTC
(``YYYY-MM-DD HH:MM:SS``, or a bare ``YYYY-MM-DD`` = midnight) -> epoch seconds.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.data.formats._common import (Columns, clean_text, finite, items_frame,
                                             join_categories, json_records)
from benchmarks.data.raw import RawData
from benchmarks.errors import DataFormatError

_BUSINESS = "a JSON object with business_id, name and categories (string or null)"
_REVIEW = "a JSON object with user_id, business_id, stars and date 'YYYY-MM-DD HH:MM:SS'"


def _epoch(date: object) -> float:
    if not isinstance(date, str) or len(date) not in (10, 19):
        raise ValueError(date)
    return datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp()


def read_yelp(business: str | Path | None, review: str | Path) -> RawData:
    """Read the business file (unless ``business`` is None) and the review file, in file order."""
    # the (small) business file first, so that its errors surface before a long read
    items = None
    if business is not None:
        rows: dict[str, dict[str, str | None]] = {}
        for lineno, rec in json_records(business, "the Yelp business file (JSON lines)",
                                        _BUSINESS):
            bid = rec.get("business_id")
            if not isinstance(bid, str) or not bid or "name" not in rec:
                raise DataFormatError(business, _BUSINESS, line=lineno, got=json.dumps(rec))
            rows.setdefault(bid, {"title": clean_text(rec["name"]),
                                  "categories": join_categories(rec.get("categories"))})
        items = items_frame(rows, ("title", "categories"))
    cols = Columns(rating=True)
    for lineno, rec in json_records(review, "the Yelp review file (JSON lines)", _REVIEW):
        try:
            user, item = rec["user_id"], rec["business_id"]
            stars, ts = float(rec["stars"]), _epoch(rec["date"])
        except (KeyError, TypeError, ValueError):
            raise DataFormatError(review, _REVIEW, line=lineno, got=json.dumps(rec)) from None
        if not (isinstance(user, str) and isinstance(item, str) and user and item):
            raise DataFormatError(review, _REVIEW, line=lineno, got=json.dumps(rec))
        finite(review, lineno, stars, "stars", json.dumps(rec))
        cols.add(user, item, ts, stars)
    source = f"yelp: {review}" + ("" if business is None else f", {business}")
    return RawData(cols.frame(), items, source=source)
