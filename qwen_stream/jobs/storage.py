"""Job results to S3-compatible storage (AWS, MinIO, R2, ...) through boto3, with a presigned download URL.

The endpoint, region and default bucket come from the settings (S3_ENDPOINT, S3_REGION, S3_BUCKET); the keys
from boto3's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role), never from a
request."""

from __future__ import annotations

from dataclasses import dataclass

MAX_EXPIRES = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


@dataclass(frozen=True)
class S3Target:
    bucket: str
    key: str
    expires: int  # seconds the presigned URL stays valid


class S3Uploader:
    def __init__(self, endpoint: str | None, region: str | None):
        self._endpoint = endpoint
        self._region = region
        self._client = None

    def _s3(self):
        if self._client is None:  # boto3 is imported only by servers that upload
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self._endpoint,
                region_name=self._region,
                config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}),
            )
        return self._client

    def upload(self, data: bytes, target: S3Target, content_type: str) -> str:
        """Uploads the result and returns a presigned GET URL (blocking: run it off the event loop)."""
        s3 = self._s3()
        s3.put_object(Bucket=target.bucket, Key=target.key, Body=data, ContentType=content_type)
        return s3.generate_presigned_url(
            "get_object", Params={"Bucket": target.bucket, "Key": target.key}, ExpiresIn=target.expires
        )
