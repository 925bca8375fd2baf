import redis.asyncio as aioredis


async def test_real_redis_answers(redis_client: aioredis.Redis) -> None:
    assert await redis_client.ping() is True
