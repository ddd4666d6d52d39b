"""The difflab command line: a thin layer over difflab.pipelines."""
