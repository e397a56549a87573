"""faust's aiokafka transport, with a worker consumer that fetches records in batches.

faust builds its worker consumer with aiokafka's default ``fetch_min_bytes`` of 1 and
offers no setting for it: the broker answers a fetch as soon as one record is there, so
a live worker fetched, decoded and dispatched a record or two at a time, and each fetch
crossed from the consumer's thread to the worker's loop. That cost the usage worker
1.4-2.2 ms of CPU per request at 200 requests/s, several times what it spends per
request reading a backlog (``benchmarks/usage_bench.py``, (a) and (c);
``docs/performance.md``, Usage analytics). Here the broker holds a fetch until
``FETCH_MIN_BYTES`` are there or ``FETCH_MAX_WAIT_MS`` have passed: a count shows up to
half a second later, and the worker takes each fetch's records in one go.
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as driver
from faust.types import ConsumerT

# ~80 requests of ~400 bytes: a fetch every ~0.4 s at 200 requests/s.
FETCH_MIN_BYTES = 32 * 1024
# The longest a count waits to be seen, at any rate; faust's own is 1,500 ms.
FETCH_MAX_WAIT_MS = 500


class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka's consumer hands these to its fetcher when it starts; faust passes
        # neither, so they are set on the consumer before it does. A renamed attribute
        # (an aiokafka upgrade) must fail here, not silently fetch record by record.
        for name, value in (
            ("_fetch_min_bytes", FETCH_MIN_BYTES),
            ("_fetch_max_wait_ms", FETCH_MAX_WAIT_MS),
        ):
            if not hasattr(consumer, name):
                raise RuntimeError(f"aiokafka's consumer has no {name}: see {__name__}")
            setattr(consumer, name, value)
        return consumer


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer: ClassVar[type[ConsumerT]] = Consumer
