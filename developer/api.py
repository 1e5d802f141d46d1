"""API for the account itself (`me`), API tokens and webhook endpoints with their delivery log."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from developer import selectors, services
from developer.models import ApiToken, WebhookDelivery, WebhookEndpoint
from studio.api import page_query_parameters, paginated_response, paginated_schema
from training.models import TrainingRun
from training.selectors import training_run_list_for, user_spend_this_month

# --- Me -----------------------------------------------------------------------------------


class ActiveRunSerializer(serializers.ModelSerializer):
    character_id = serializers.UUIDField()
    progress_percent = serializers.IntegerField()

    class Meta:
        model = TrainingRun
        fields = ["id", "character_id", "status", "progress_step", "progress_total", "progress_percent"]


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.EmailField(allow_blank=True)
    monthly_gpu_budget_usd = serializers.DecimalField(
        max_digits=10, decimal_places=2, allow_null=True, help_text="null means unlimited."
    )
    spend_this_month_usd = serializers.DecimalField(max_digits=12, decimal_places=4)
    budget_remaining_usd = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True)
    active_runs = ActiveRunSerializer(many=True)


class MeApi(APIView):
    @extend_schema(operation_id="me_read", responses=MeSerializer, tags=["account"])
    def get(self, request: Request) -> Response:
        user: Any = request.user
        spend = user_spend_this_month(user)
        budget = user.monthly_gpu_budget_usd
        active = training_run_list_for(user).filter(status__in=TrainingRun.ACTIVE_STATUSES)
        data = {
            "username": user.username,
            "email": user.email,
            "monthly_gpu_budget_usd": budget,
            "spend_this_month_usd": spend,
            "budget_remaining_usd": None if budget is None else max(Decimal("0"), budget - spend),
            "active_runs": list(active),
        }
        return Response(MeSerializer(data).data)


# --- API tokens ---------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="The token itself. Shown only in this response: store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]


class ApiTokenListApi(APIView):
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)

        class Meta:
            ref_name = "ApiTokenCreateInput"

    @extend_schema(
        operation_id="tokens_list",
        parameters=page_query_parameters(),
        responses=paginated_schema(ApiTokenSerializer),
        tags=["tokens"],
    )
    def get(self, request: Request) -> Response:
        tokens = selectors.api_token_list_for(request.user)  # type: ignore[arg-type]
        return paginated_response(
            queryset=tokens, serializer_class=ApiTokenSerializer, request=request, view=self
        )

    @extend_schema(
        operation_id="tokens_create",
        request=InputSerializer,
        responses={201: ApiTokenCreatedSerializer},
        tags=["tokens"],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw = services.api_token_create(user=request.user, **serializer.validated_data)  # type: ignore[arg-type]
        token.token = raw  # type: ignore[attr-defined]
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)


class ApiTokenRevokeApi(APIView):
    @extend_schema(operation_id="tokens_revoke", request=None, responses=ApiTokenSerializer, tags=["tokens"])
    def post(self, request: Request, token_id: uuid.UUID) -> Response:
        token = selectors.api_token_get_for(request.user, token_id)  # type: ignore[arg-type]
        token = services.api_token_revoke(token=token)
        return Response(ApiTokenSerializer(token).data)


# --- Webhook endpoints --------------------------------------------------------------------


class WebhookEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "description", "active", "created_at", "updated_at"]


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        help_text="`whsec_…` signing secret. Shown only in this response: store it now."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
            "payload",
        ]
        extra_kwargs = {
            "next_attempt_at": {
                "help_text": "When a pending delivery is attempted next; null once delivered or failed."
            }
        }


class WebhookEndpointListApi(APIView):
    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=500)
        description = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)

        class Meta:
            ref_name = "WebhookEndpointCreateInput"

    @extend_schema(
        operation_id="webhooks_list",
        parameters=page_query_parameters(),
        responses=paginated_schema(WebhookEndpointSerializer),
        tags=["webhooks"],
    )
    def get(self, request: Request) -> Response:
        endpoints = selectors.webhook_endpoint_list_for(request.user)  # type: ignore[arg-type]
        return paginated_response(
            queryset=endpoints, serializer_class=WebhookEndpointSerializer, request=request, view=self
        )

    @extend_schema(
        operation_id="webhooks_create",
        request=InputSerializer,
        responses={201: WebhookEndpointCreatedSerializer},
        tags=["webhooks"],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_endpoint_create(user=request.user, **serializer.validated_data)  # type: ignore[arg-type]
        endpoint.secret = secret
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=500, required=False)
        description = serializers.CharField(max_length=200, required=False, allow_blank=True)
        active = serializers.BooleanField(required=False)

        class Meta:
            ref_name = "WebhookEndpointUpdateInput"

    @extend_schema(operation_id="webhooks_read", responses=WebhookEndpointSerializer, tags=["webhooks"])
    def get(self, request: Request, endpoint_id: uuid.UUID) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(request.user, endpoint_id)  # type: ignore[arg-type]
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhooks_update",
        request=InputSerializer,
        responses=WebhookEndpointSerializer,
        tags=["webhooks"],
    )
    def patch(self, request: Request, endpoint_id: uuid.UUID) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(request.user, endpoint_id)  # type: ignore[arg-type]
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(operation_id="webhooks_delete", responses={204: None}, tags=["webhooks"])
    def delete(self, request: Request, endpoint_id: uuid.UUID) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(request.user, endpoint_id)  # type: ignore[arg-type]
        services.webhook_endpoint_delete(endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListApi(APIView):
    @extend_schema(
        operation_id="webhooks_deliveries_list",
        parameters=page_query_parameters(),
        responses=paginated_schema(WebhookDeliverySerializer),
        tags=["webhooks"],
    )
    def get(self, request: Request, endpoint_id: uuid.UUID) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(request.user, endpoint_id)  # type: ignore[arg-type]
        return paginated_response(
            queryset=selectors.webhook_delivery_list(endpoint),
            serializer_class=WebhookDeliverySerializer,
            request=request,
            view=self,
        )
