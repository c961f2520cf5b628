"""What the app adds to MONAI Label's web server: checked routes, an id guard, JSON errors, clean shutdown."""
