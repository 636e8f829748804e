"""The reference gateway instance: the seed's system built right, on ``websockets`` asyncio."""
