// StreamHub demo chat.
