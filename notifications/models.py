"""In-app notifications (filled by the notifications issue)."""
