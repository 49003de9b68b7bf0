"""The durable queue: what emit() appends to and the uploader reads from."""

from analytics.queue.disk import DiskQueue
from analytics.queue.offline import OfflineQueue, QueueBounds, QueueStats

__all__ = ["DiskQueue", "OfflineQueue", "QueueBounds", "QueueStats"]
