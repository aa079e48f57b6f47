from django import forms


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the token is for, e.g. “training script”.", widget=forms.TextInput()
    )
