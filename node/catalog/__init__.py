"""The catalog: models, versions, files and images projected from records; search; APIs."""
