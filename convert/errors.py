"""The one exception type the converter raises for bad input."""


class ConversionError(ValueError):
    """Input the converter cannot use; the message names the file, tensor or option at fault.

    A ValueError subclass so callers that already catch ValueError keep working; the CLI turns it
    into a one-line "minicpmo-convert: error: ..." without a traceback.
    """
