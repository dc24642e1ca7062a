"""Request checks that belong before any view."""

from __future__ import annotations

from django.http import JsonResponse


class RefuseNulCharacters:
    """A NUL character in the path or query string can reach no valid object or filter, and
    PostgreSQL refuses it in any text parameter: answer 400 here rather than a 500 from the query.
    (Request bodies are checked by their serializers: DRF's CharField refuses NUL.)"""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()
        ):
            return JsonResponse(
                {"code": "invalid_input", "detail": "NUL characters are not allowed in the URL"}, status=400
            )
        return self.get_response(request)
