"""Federation: peers exchange signed records over HTTP (pull with cursors, push to inboxes)."""
