"""Media on an S3-compatible store: moto's S3 server on 127.0.0.1 (the s3_endpoint fixture) stands in for it."""

import pytest

from gallery import services
from gallery.models import DerivativeStatus
from imagineer.testing import image_bytes

pytestmark = pytest.mark.slow


def test_images_are_stored_and_served_from_s3(s3_endpoint, settings, user, user_client):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="media")
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": "media", "endpoint_url": s3_endpoint, "access_key": "k", "secret_key": "s",
        "region_name": "us-east-1", "default_acl": "private", "file_overwrite": False}}}
    data = image_bytes("PNG", seed=4)
    image = services.image_ingest(owner=user, data=data, filename="a.png").image
    services.image_make_derivatives(image=image)
    image.refresh_from_db()
    assert image.derivatives == DerivativeStatus.READY
    keys = {obj["Key"] for obj in s3.list_objects_v2(Bucket="media")["Contents"]}
    assert {image.file.name, image.thumbnail.name, image.preview.name} == keys
    assert s3.get_object(Bucket="media", Key=image.file.name)["Body"].read() == data
    original = user_client.get(f"/gallery/images/{image.pk}/original")
    assert b"".join(original.streaming_content) == data
    assert user_client.get(f"/gallery/images/{image.pk}/thumbnail.webp")["Content-Type"] == "image/webp"
    assert services.image_ingest(owner=user, data=data).duplicate
