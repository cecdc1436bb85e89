"""Runs an XPath query over the event's XML with lxml (libxml2 and libxslt from its wheel)."""

from lxml import etree
from shared import envelope


def handler(event, context):
    root = etree.fromstring(event["xml"].encode())
    return envelope({"lxml": etree.__version__, "titles": root.xpath(event.get("xpath", "//title/text()"))})
