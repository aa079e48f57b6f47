"""The crawl process: a Scrapy spider run by ``python -m scraping.crawler.run``, one crawl per process.

This package is the only place Scrapy and Twisted are imported, and only by ``run``, ``spider``,
``tdmrep`` and ``safety``; ``config``, ``guard``, ``events`` and ``optout`` are pure Python so the parent
(scraping.crawl_runner) and the tests can use them without pulling Scrapy into their process. Keep this file
free of imports.

Protocol, config keys and event shapes: see ``run`` and ``events``.
"""
