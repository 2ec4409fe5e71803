class AsyncSandboxCompose:  # placeholder replaced below
    pass
